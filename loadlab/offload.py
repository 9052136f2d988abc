"""The fix, made in memory: calls to a blocking function, moved off the event loop at import.

``--offload MODULE:CALLEE`` names every call to ``CALLEE`` (as written in ``MODULE``'s code:
``_throttle``, ``time.sleep``) made inside an ``async def`` of ``MODULE``. :func:`rewrite` turns
each such call into ``await anyio.to_thread.run_sync(functools.partial(CALLEE, …))`` (or
:func:`run_in_process`, a process pool, for ``--to process``) in the module's syntax tree; the call sites it
cannot rewrite safely are listed with the reason, and left alone. :func:`install_from_env` puts an
import hook in the server process (``loadlab.wrap`` calls it before it imports the app) that
compiles ``MODULE`` from its rewritten tree: no file is written, no bytecode cache either.

Pure and small: the harness runs the same :func:`plan` before any server starts, so a callee that
is not there is a one-line error, and the run folder lists the sites before they are measured.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import functools
import importlib.abc
import importlib.machinery
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from loadlab.config import ConfigError

# The server learns what to rewrite from this (JSON: a list of Offload), and writes what it did
# rewrite into the folder the other names (one file per process).
OFFLOADS_ENV = "LOADLAB_WHATIF_OFFLOADS"
APPLIED_ENV = "LOADLAB_WHATIF_APPLIED"
TARGETS = ("thread", "process")

# The names the rewritten module uses; single underscore, so a class body does not mangle them.
_ALIASES = {"anyio.to_thread": "_loadlab_to_thread", "loadlab.offload": "_loadlab_offload"}
_PARTIAL = "_loadlab_functools"
# The call each target awaits: anyio's threadpool (FastAPI's own, 40 tokens), or a process pool
# started with the server (as an app would start its own, not with the first request).
_RUNNER = {"thread": ("anyio.to_thread", "run_sync"), "process": ("loadlab.offload", "run_in_process")}
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.GeneratorExp, ast.ClassDef, *_COMPREHENSIONS)


class OffloadError(ConfigError):
    """An ``--offload`` that cannot be applied; one line naming what to change."""


@dataclass(frozen=True)
class Offload:
    module: str
    callee: str
    to: str = "thread"

    @property
    def spec(self) -> str:
        return f"{self.module}:{self.callee}"


def parse_offload(text: str, to: str = "thread") -> Offload:
    """``MODULE:CALLEE`` → :class:`Offload`, the callee normalised as Python writes it."""
    module, sep, callee = text.partition(":")
    if not sep or not module.strip() or not callee.strip():
        raise OffloadError(f"--offload {text!r}: expected MODULE:CALLEE, e.g. myapp.routes:time.sleep")
    if not all(part.isidentifier() for part in module.strip().split(".")):
        raise OffloadError(f"--offload {text!r}: {module!r} is not a module name (dotted, like myapp.routes)")
    try:
        node = ast.parse(callee.strip(), mode="eval").body
    except SyntaxError:
        node = None
    if not _is_dotted(node):
        raise OffloadError(
            f"--offload {text!r}: {callee!r} is not a name or a dotted name as the module calls it "
            "(like _throttle or time.sleep)"
        )
    if to not in TARGETS:
        raise OffloadError(f"--to {to!r}: expected one of {', '.join(TARGETS)}")
    assert node is not None
    return Offload(module.strip(), ast.unparse(node), to)


def _is_dotted(node: ast.AST | None) -> bool:
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _root(callee: str) -> str:
    return callee.split(".", 1)[0]


@dataclass
class Site:
    """One call site: rewritten (``after`` set) or left alone (``reason`` set)."""

    module: str
    file: str
    line: int
    function: str | None
    callee: str
    to: str
    before: str
    after: str | None = None
    reason: str | None = None

    @property
    def where(self) -> str:
        return f"{Path(self.file).name}:{self.line}"


@dataclass
class Rewrite:
    tree: ast.Module
    sites: list[Site] = field(default_factory=list)  # rewritten
    skipped: list[Site] = field(default_factory=list)  # left alone, each with its reason


def offloaded_call(call: ast.Call, callee: ast.expr, to: str, plain: bool = False) -> ast.Await:
    """``await anyio.to_thread.run_sync(functools.partial(callee, *args, **kwargs))`` (or
    ``loadlab.offload.run_in_process``); with ``plain`` the names as a person writes them, else the
    module's private aliases."""
    owner, function = _RUNNER[to]
    runner = owner if plain else _ALIASES[owner]
    partial_owner = "functools" if plain else _PARTIAL
    partial = ast.Call(
        func=ast.Attribute(ast.Name(partial_owner, ast.Load()), "partial", ast.Load()),
        args=[callee, *call.args],
        keywords=call.keywords,
    )
    run_sync = ast.Attribute(_dotted(runner), function, ast.Load())
    out = ast.Await(ast.Call(func=run_sync, args=[partial], keywords=[]))
    for node in ast.walk(out):
        if getattr(node, "lineno", None) is None:  # a new node: on the line of the call it replaces
            ast.copy_location(node, call)
    return out


def _plain(code: str) -> str:
    """Rewritten code with the names a person writes (a call inside the call was rewritten first)."""
    for name, alias in [*_ALIASES.items(), ("functools", _PARTIAL)]:
        code = code.replace(f"{alias}.", f"{name}.")
    return code


def _dotted(name: str) -> ast.expr:
    parts = name.split(".")
    node: ast.expr = ast.Name(parts[0], ast.Load())
    for part in parts[1:]:
        node = ast.Attribute(node, part, ast.Load())
    return node


class _Rewriter(ast.NodeTransformer):
    """Rewrites the offloadable calls in place, noting each site; see :func:`rewrite`."""

    def __init__(self, module: str, file: str, callees: dict[str, str], module_lambdas: set[str]) -> None:
        self.module, self.file, self.callees = module, file, callees
        self.module_lambdas = module_lambdas
        self.scopes: list[ast.AST] = []
        self.finally_depth: list[int] = [0]
        self.awaited: set[int] = set()
        self.result: list[Site] = []

    def _scoped(self, node: ast.AST) -> ast.AST:
        self.scopes.append(node)
        self.finally_depth.append(0)
        try:
            return self.generic_visit(node)
        finally:
            self.scopes.pop()
            self.finally_depth.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_GeneratorExp = _scoped
    visit_ClassDef = visit_ListComp = visit_SetComp = visit_DictComp = _scoped

    def _visit_try(self, node: ast.Try | ast.TryStar) -> ast.AST:
        final, node.finalbody = node.finalbody, []
        self.generic_visit(node)
        self.finally_depth[-1] += 1
        try:
            node.finalbody = _statements(self.visit(s) for s in final)
        finally:
            self.finally_depth[-1] -= 1
        return node

    visit_Try = visit_TryStar = _visit_try

    def visit_Await(self, node: ast.Await) -> ast.AST:
        self.awaited.add(id(node.value))
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        awaited = id(node) in self.awaited
        before = ast.unparse(node)  # as written, before any call inside it is rewritten
        self.generic_visit(node)  # inner calls first: f(f(x)) offloads both
        callee = ast.unparse(node.func)
        to = self.callees.get(callee)
        if to is None:
            return node
        function, reason = self._context(awaited)
        if reason is None and to == "process":
            reason = self._unpicklable(node, callee)
        site = Site(self.module, self.file, node.lineno, function, callee, to, before, reason=reason)
        self.result.append(site)
        if reason is not None:
            return node
        site.after = _plain(ast.unparse(offloaded_call(node, node.func, to, plain=True)))
        return offloaded_call(node, node.func, to)

    def _context(self, awaited: bool) -> tuple[str | None, str | None]:
        """The enclosing ``async def`` (its name), and why the call cannot move off the loop there."""
        depth = 0
        for scope in reversed(self.scopes):
            depth += self.finally_depth[self.scopes.index(scope) + 1]
            if isinstance(scope, _COMPREHENSIONS):
                continue  # [await … for …] is allowed in an async def
            if isinstance(scope, ast.AsyncFunctionDef):
                if awaited:
                    return scope.name, "already awaited: the call returns an awaitable, it does not block"
                if depth:
                    return scope.name, "in a finally block, which must not suspend (a cancellation there would skip it)"
                return scope.name, None
            outer = next((s.name for s in self.scopes if isinstance(s, ast.AsyncFunctionDef)), None)
            if isinstance(scope, ast.GeneratorExp):
                return outer, "inside a generator expression (an await would make it an async generator)"
            if isinstance(scope, ast.Lambda):
                return outer, "inside a lambda (a lambda cannot await)"
            if isinstance(scope, ast.FunctionDef):
                if outer is not None:  # an async def further in would have been the innermost
                    return scope.name, f"inside `def {scope.name}`, a sync function nested in `async def {outer}`"
                return scope.name, f"in `def {scope.name}`, not an async def (it runs wherever its caller runs)"
            break
        return None, "not inside a function (module or class body): it runs at import, not on the loop"

    def _unpicklable(self, call: ast.Call, callee: str) -> str | None:
        """Why the callee or an argument could not be pickled for a process, if it could not."""
        if _root(callee) in self.module_lambdas and "." not in callee:
            return f"`{callee}` is a lambda: a process pool can only run a function importable by name"
        if _root(callee) in ("self", "cls") and "." in callee:
            return f"`{callee}` is a bound method: pickling it for a process would carry its whole object along"
        local = _locals_of(self.scopes)
        if _root(callee) in local:
            return f"`{_root(callee)}` is local to the function: a process pool can only run a module-level function"
        named = [(f"argument {i}", a) for i, a in enumerate(call.args, 1)]
        named += [(f"argument {k.arg or '**'}", k.value) for k in call.keywords]
        for label, arg in named:
            text = f"{label} (`{ast.unparse(arg)}`)"
            for node in ast.walk(arg):
                if isinstance(node, ast.Lambda):
                    return f"{text} is a lambda, which cannot be pickled for a process"
                if isinstance(node, ast.GeneratorExp):
                    return f"{text} is a generator, which cannot be pickled for a process"
                if isinstance(node, ast.Name) and node.id in local:
                    return f"{text} uses `{node.id}`, defined inside the function: it cannot be pickled for a process"
        return None


def _locals_of(scopes: list[ast.AST]) -> set[str]:
    """Functions and lambdas defined inside the enclosing functions (what a process cannot import)."""
    out: set[str] = set()
    for scope in scopes:
        if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(scope):
            if node is scope:
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                out.add(node.name)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
                out.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return out


def _statements(items: Any) -> list[ast.stmt]:
    out: list[ast.stmt] = []
    for item in items:
        if isinstance(item, list):
            out.extend(item)
        elif item is not None:
            out.append(item)
    return out


def module_names(tree: ast.Module) -> tuple[set[str], set[str], bool]:
    """Names bound at module level, those bound to a lambda, and whether a ``*`` import hides more."""
    bound: set[str] = set()
    lambdas: set[str] = set()
    star = False
    todo: list[ast.AST] = list(tree.body)
    while todo:  # the module's statements, into if/try/with blocks but not into functions or classes
        node = todo.pop()
        if isinstance(node, ast.Import):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            star = star or any(a.name == "*" for a in node.names)
            bound.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
            continue
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            lambdas.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if not isinstance(node, ast.Lambda):
            todo.extend(ast.iter_child_nodes(node))
    return bound, lambdas, star


def rewrite(source: str | bytes, file: str, module: str, offloads: Sequence[Offload]) -> Rewrite:
    """The module's syntax tree with every offloadable call of ``offloads`` (those naming
    ``module``) rewritten, and every matching call site, rewritten or not (with the reason)."""
    tree = ast.parse(source, filename=file)
    callees = {o.callee: o.to for o in offloads if o.module == module}
    _, lambdas, _ = module_names(tree)
    rewriter = _Rewriter(module, file, callees, lambdas)
    rewriter.visit(tree)
    done = [s for s in rewriter.result if s.reason is None]
    if done:
        used = sorted({_ALIASES[_RUNNER[s.to][0]] for s in done})
        imports: list[ast.stmt] = [ast.Import([ast.alias("functools", _PARTIAL)])]
        imports += [ast.Import([ast.alias(name, alias)]) for name, alias in _ALIASES.items() if alias in used]
        at = _after_header(tree)
        tree.body[at:at] = imports
    ast.fix_missing_locations(tree)  # the new imports sit on line 1: tracebacks keep their lines
    sites = sorted(done, key=lambda s: s.line)
    skipped = sorted((s for s in rewriter.result if s.reason is not None), key=lambda s: s.line)
    return Rewrite(tree, sites, skipped)


def _after_header(tree: ast.Module) -> int:
    """Where imports may go: after the docstring and any ``from __future__`` import."""
    i = 0
    body = tree.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        i = 1
    while i < len(body) and _is_future(body[i]):
        i += 1
    return i


def _is_future(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.ImportFrom) and stmt.module == "__future__"


def find_source(module: str, path: Sequence[str] | None = None) -> Path:
    """The source file of ``module``, found the way import finds it but without importing anything
    (not even its parent packages): the current directory first, as uvicorn does."""
    search: list[str] | None = list(path) if path is not None else [os.getcwd(), *sys.path]
    parts = module.split(".")
    spec = None
    for i in range(len(parts)):
        name = ".".join(parts[: i + 1])
        spec = importlib.machinery.PathFinder.find_spec(name, search)
        if spec is None:
            raise OffloadError(f"--offload {module}: no module named {name} is importable from {os.getcwd()}")
        locations = spec.submodule_search_locations
        if i < len(parts) - 1:
            if locations is None:
                raise OffloadError(f"--offload {module}: {name} is a module, not a package")
            search = list(locations)
    assert spec is not None
    if not spec.origin or not spec.origin.endswith(".py"):
        raise OffloadError(f"--offload {module}: it has no Python source to rewrite ({spec.origin or 'a namespace'})")
    return Path(spec.origin)


def plan(offloads: Sequence[Offload]) -> list[Rewrite]:
    """Every module's rewrite, checked before any server starts: each callee must be defined in its
    module and called in an ``async def`` there at a site that can be rewritten."""
    out = []
    for module in dict.fromkeys(o.module for o in offloads):
        path = find_source(module)
        source = path.read_bytes()
        try:
            tree = ast.parse(source, filename=str(path))
        except SyntaxError as exc:
            raise OffloadError(f"--offload {module}: {path} does not parse ({exc.msg}, line {exc.lineno})") from None
        bound, _, star = module_names(tree)
        mine = [o for o in offloads if o.module == module]
        for o in mine:
            if any(isinstance(n, ast.AsyncFunctionDef) and n.name == o.callee for n in tree.body):
                raise OffloadError(f"--offload {o.spec}: `{o.callee}` is an async def; calling it does not block")
        result = rewrite(source, str(path), module, mine)
        for o in mine:
            found = [s for s in result.sites + result.skipped if s.callee == o.callee]
            if not found and _root(o.callee) not in bound and not hasattr(builtins, _root(o.callee)) and not star:
                raise OffloadError(
                    f"--offload {o.spec}: `{_root(o.callee)}` is not defined in {module} ({path.name}); "
                    "name the callee as that module's code calls it"
                )
            if not found:
                raise OffloadError(f"--offload {o.spec}: {module} ({path.name}) never calls `{o.callee}`")
            if not any(s.callee == o.callee for s in result.sites):
                why = "; ".join(f"{s.where}: {s.reason}" for s in found[:3])
                raise OffloadError(f"--offload {o.spec}: no call site can be moved off the loop ({why})")
        out.append(result)
    return out


def site_records(rewrites: Sequence[Rewrite]) -> dict[str, list[dict[str, Any]]]:
    return {
        "rewritten": [asdict(s) for r in rewrites for s in r.sites],
        "left_alone": [asdict(s) for r in rewrites for s in r.skipped],
    }


# -- In the server process ------------------------------------------------------------------------


class _RewritingLoader(importlib.machinery.SourceFileLoader):
    """Compiles the module from its rewritten tree; never reads nor writes its bytecode cache."""

    def __init__(self, fullname: str, path: str, offloads: Sequence[Offload], applied: Path | None) -> None:
        super().__init__(fullname, path)
        self.offloads = offloads
        self.applied = applied

    def get_code(self, fullname: str) -> Any:
        result = rewrite(self.get_data(self.path), self.path, fullname, self.offloads)
        if self.applied is not None:
            _record(self.applied, fullname, result)
        return compile(result.tree, self.path, "exec", dont_inherit=True)


class OffloadFinder(importlib.abc.MetaPathFinder):
    """Finds the named modules like the path finder does, with the rewriting loader."""

    def __init__(self, offloads: Sequence[Offload], applied: Path | None = None) -> None:
        self.offloads = list(offloads)
        self.modules = {o.module for o in offloads}
        self.applied = applied

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader) or not spec.origin:
            return spec
        spec.loader = _RewritingLoader(fullname, spec.origin, self.offloads, self.applied)
        spec.cached = None  # nothing is written next to the source
        return spec


def _record(folder: Path, module: str, result: Rewrite) -> None:
    """What this process rewrote, for the harness to check against its plan."""
    path = folder / f"applied-{os.getpid()}.json"
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data[module] = {"rewritten": [asdict(s) for s in result.sites], "left_alone": [asdict(s) for s in result.skipped]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


_POOL: ProcessPoolExecutor | None = None


def process_pool() -> ProcessPoolExecutor:
    """The server's process pool for ``--to process``: one worker per core, spawned (the server
    already runs threads, which fork would copy mid-lock), started at once like an app's own."""
    global _POOL
    if _POOL is None:
        workers = os.cpu_count() or 2
        _POOL = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        wait([_POOL.submit(os.getpid) for _ in range(workers)])
    return _POOL


async def run_in_process(call: functools.partial[Any]) -> Any:
    """What a ``--to process`` call site awaits: the call, in the process pool."""
    return await asyncio.get_running_loop().run_in_executor(process_pool(), call)


def offloads_env(offloads: Sequence[Offload], applied: Path) -> dict[str, str]:
    return {OFFLOADS_ENV: json.dumps([asdict(o) for o in offloads]), APPLIED_ENV: str(applied)}


def install_from_env() -> OffloadFinder | None:
    """In the server, before the app is imported: the hook, if the harness asked for one."""
    raw = os.environ.get(OFFLOADS_ENV)
    if not raw:
        return None
    offloads = [Offload(**o) for o in json.loads(raw)]
    applied = Path(os.environ[APPLIED_ENV]) if os.environ.get(APPLIED_ENV) else None
    early = sorted(o.module for o in offloads if o.module in sys.modules)
    if early:  # imported before the hook: it would run unchanged, and the measurement would lie
        raise RuntimeError(f"loadlab whatif: {', '.join(early)} was imported before the import hook")
    finder = OffloadFinder(offloads, applied)
    sys.meta_path.insert(0, finder)
    if any(o.to == "process" for o in offloads):
        process_pool()  # before the server answers: the first requests measure the work, not a start
    return finder
