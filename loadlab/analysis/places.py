"""Where a stack sits in the app: a route's handler, a dependency, middleware, a background task,
or the app's start-up. A blocker's place says who to blame and which routes it hits.

The app's map comes from its instrumentation (``routes.json``, from ``/debug/routes``): each
route's endpoint, each dependency with the routes that use it (FastAPI's dependency graph of the
running app), and the middleware every request passes. A stack is placed by its innermost
application frame that is on the map; one that runs under Starlette's background-task machinery
before reaching any is a background task; one under the server's start-up is start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from loadlab.analysis.stacks import Frame, enclosing_name, is_library_file, is_startup
from loadlab.results import StoredDataError, read_json

PLACES = ("handler", "dependency", "middleware", "background", "startup", "unknown")
_BACKGROUND = ("starlette/background.py",)

Key = tuple[str, str]  # (function, file)


@dataclass(frozen=True)
class AppMap:
    """What ``routes.json`` says of the app's code, keyed by (function, file)."""

    routes: dict[Key, str] = field(default_factory=dict)
    dependencies: dict[Key, tuple[str, ...]] = field(default_factory=dict)
    middleware: frozenset[Key] = frozenset()
    packages: tuple[str, ...] = ()  # the top-level package of each layer of the app (fastapi, falcon…)

    @property
    def app_routes(self) -> tuple[str, ...]:
        """Every route of the application's own (the framework's /docs and /openapi.json aside)."""
        return tuple(sorted({p for (_, file), p in self.routes.items() if not is_library_file(file)}))


@dataclass(frozen=True)
class Place:
    place: str  # one of PLACES
    function: str | None  # the handler, dependency or middleware it sits in
    routes: tuple[str, ...]


def load_app_map(path: Path | None) -> AppMap:
    """The app's map from ``routes.json`` (an older one lists routes only), if present."""
    if path is None or not path.exists():
        return AppMap()
    data = read_json(path)
    try:
        routes = {(str(r["function"]), str(r["file"])): str(r["path"]) for r in data.get("routes", [])}
        deps = {
            (str(d["function"]), str(d["file"])): tuple(str(p) for p in d["routes"])
            for d in data.get("dependencies", [])
        }
        middleware = frozenset((str(m["function"]), str(m["file"])) for m in data.get("middleware", []))
        packages = tuple(str(p) for p in data.get("packages", []))
    except (AttributeError, KeyError, TypeError):
        raise StoredDataError(f'{path}: expected {{"routes": [{{"path", "function", "file"}}, …], …}}') from None
    return AppMap(routes, deps, middleware, packages)


def _keys(frame: Frame) -> tuple[Key, Key]:
    # py-spy names a frame by its qualified name; an older routes.json by the bare name.
    name = enclosing_name(frame.name)
    return (name, frame.file), (name.rsplit(".", 1)[-1], frame.file)


def place_of(frames: tuple[Frame, ...], app: AppMap) -> Place:
    """Where the stack ``frames`` (outermost first) sits in the app."""
    for frame in reversed(frames):
        if frame.native:
            continue
        if frame.file.replace("\\", "/").endswith(_BACKGROUND):
            return Place("background", None, ())
        if is_library_file(frame.file):
            continue
        for key in _keys(frame):
            if key in app.routes:
                return Place("handler", key[0], (app.routes[key],))
            if key in app.dependencies:
                return Place("dependency", key[0], app.dependencies[key])
            if key in app.middleware:
                return Place("middleware", key[0], app.app_routes)
    if is_startup(frames):
        return Place("startup", None, ())
    return Place("unknown", None, ())
