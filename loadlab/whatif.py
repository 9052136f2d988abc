"""``loadlab whatif``: the app as it is and the app with the fix made in memory, under one load.

The two sides run interleaved — baseline, offloaded, baseline, offloaded … (``--repeats`` pairs),
each on a fresh server — so a machine that slows down halfway slows both alike. The run folder
is a suite (``loadlab report`` and ``loadlab compare`` read it as one) whose ``run.json`` adds a
``whatif`` record: the rewritten call sites (file:line, before → after), those left alone and why,
each side's throughput, p95 and loop busy share (median and range), the gain with its spread,
and the model's predicted gain beside it when the baseline run holds one.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import os
import shlex
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from loadlab.analysis.compare import Spread, run_metrics, times
from loadlab.config import ProfileConfig, loadlab_env
from loadlab.offload import Offload, OffloadError, Rewrite, offloads_env, plan, site_records
from loadlab.processes import ProcessError
from loadlab.progress import Progress
from loadlab.report import write_comparison
from loadlab.results import RunRecord, load_run, new_run_dir, point_latest, read_json

SIDES = ("baseline", "offloaded")
# A prediction agrees with the measurement when it lies within the measured gains' range widened
# by this much (the run-to-run noise of a shared 2-core machine).
AGREEMENT_MARGIN = 0.15
NO_PREDICTION = "no prediction (the model is not in this run)"


@contextlib.contextmanager
def _server_env(values: dict[str, str]) -> Iterator[None]:
    """The server inherits the harness's environment: these variables for one run only."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_whatif(cfg: ProfileConfig, offloads: Sequence[Offload], repeats: int, progress: Progress) -> Path:
    """Plan the rewrite (refusing before any server starts), run A B A B …, write the verdict."""
    from loadlab.runner import RunFailed, run_once

    # Both arms recorded alike: on demand, an async original would run without py-spy and a fix that
    # moves the work to threads would pay for one, tilting the verdict against the fix.
    cfg = dataclasses.replace(cfg.validated(), pyspy_on_demand=False)
    if not cfg.instrument or cfg.target_host or cfg.agent:
        raise OffloadError("loadlab whatif starts the app itself, instrumented: drop --no-instrument/--target-host")
    rewrites = plan(offloads)
    run_dir = new_run_dir(cfg.profiles_dir, "whatif", cfg.out)
    if cfg.out is None:
        point_latest(cfg.profiles_dir, run_dir)
    progress.note(f"run folder: {run_dir}")
    for line in site_lines(rewrites):
        progress.note(line)
    whatif: dict[str, Any] = {"offloads": [o.__dict__ for o in offloads], "repeats": repeats, **site_records(rewrites)}
    record = RunRecord.create(run_dir, "suite", cfg.to_dict(), loadlab_env(), variants=[], whatif=whatif)
    start = time.monotonic()
    try:
        for i in range(1, repeats + 1):
            for side in SIDES:
                name = f"{side}-{i}"
                progress.note(f"— {side}, run {i}/{repeats}")
                vdir = run_dir / name
                vdir.mkdir()
                entry: dict[str, Any] = {"name": side, "dir": name, "status": "incomplete"}
                record.data["variants"].append(entry)
                applied = vdir / "offload"
                env = offloads_env(offloads, applied) if side == "offloaded" else {}
                if env:
                    applied.mkdir()
                try:
                    with _server_env(env):
                        run_once(cfg, vdir, progress, variant=side)
                except (RunFailed, ProcessError) as exc:
                    progress.note(f"{name} failed: {str(exc).splitlines()[0]}")
                finally:
                    with contextlib.suppress(Exception):
                        entry["status"] = load_run(vdir).get("status", "failed")
                    if env:
                        entry["applied"] = _applied(applied)
                    record.save()
        whatif.update(summarise(run_dir, record.data["variants"], offloads))
        record.data["status"], record.data["reason"] = whatif["status"], whatif.get("reason")
        record.save()
        write_comparison([run_dir], run_dir)
        (run_dir / "whatif.md").write_text(whatif_markdown(record.data), encoding="utf-8")
        (run_dir / "whatif.html").write_text(whatif_html(record.data), encoding="utf-8")
    except KeyboardInterrupt:
        record.data["status"], record.data["reason"] = "incomplete", "interrupted"
        raise
    except Exception as exc:
        record.data["status"], record.data["reason"] = "failed", str(exc).splitlines()[0]
        raise
    finally:
        record.data["timings_s"] = {"total": round(time.monotonic() - start, 3)}
        record.save()
    return run_dir


def _applied(folder: Path) -> list[str]:
    """The call sites the server rewrote (each process writes what it did), as ``file:line``."""
    seen: set[str] = set()
    for path in sorted(folder.glob("applied-*.json")):
        for module in read_json(path).values():
            seen.update(f"{Path(s['file']).name}:{s['line']}" for s in module["rewritten"])
    return sorted(seen)


def site_lines(rewrites: Sequence[Rewrite]) -> list[str]:
    out = []
    for r in rewrites:
        for s in r.sites:
            out.append(f"rewritten  {s.where} in {s.function}: {s.before}  →  {s.after}")
        for s in r.skipped:
            out.append(f"left alone {s.where}{' in ' + s.function if s.function else ''}: {s.before} — {s.reason}")
    return out


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    s = Spread.of(values)
    return {"median": s.median, "low": s.low, "high": s.high, "n": s.n}


def summarise(run_dir: Path, variants: list[dict[str, Any]], offloads: Sequence[Offload]) -> dict[str, Any]:
    """Each side's figures (median and range over its runs that measured something: complete or
    doubtful), the gain per pair, the prediction if the baseline holds one, and the status of the
    whole: doubtful when any run was not complete, failed when no pair was measured."""
    metrics: dict[str, list[dict[str, float | None]]] = {side: [] for side in SIDES}
    pairs: dict[str, dict[str, dict[str, float | None]]] = {}
    problems = []
    baseline_run: dict[str, Any] | None = None
    for v in variants:
        if v.get("status") != "complete":
            why = f" ({v['reason']})" if v.get("reason") else ""
            problems.append(f"{v['dir']} is {v.get('status')}{why}")
            if v.get("status") != "doubtful":  # a doubtful run measured something, with a caveat: keep it
                continue
        run = load_run(run_dir / v["dir"])
        baseline_run = baseline_run or (run if v["name"] == "baseline" else None)
        m = run_metrics(run)
        metrics[v["name"]].append(m)
        pairs.setdefault(v["dir"].rsplit("-", 1)[1], {})[v["name"]] = m
        if v["name"] == "offloaded" and not v.get("applied"):
            problems.append(f"{v['dir']}: the server rewrote no call site (was the module imported by the app?)")
    sides = {
        side: {
            key: _spread([float(x) for m in ms if (x := m[key]) is not None]) for key in ("rps", "p95_ms", "loop_busy")
        }
        for side, ms in metrics.items()
    }
    gains = [
        float(p["offloaded"]["rps"]) / float(p["baseline"]["rps"])
        for p in pairs.values()
        if len(p) == 2 and p["baseline"]["rps"] and p["offloaded"]["rps"] is not None
    ]
    gain = _spread(gains)
    functions = [
        f for v in variants if v["name"] == "offloaded" for f in _applied_functions(run_dir / v["dir"] / "offload")
    ]
    predicted = predicted_gain(baseline_run, offloads, functions) if baseline_run else None
    out: dict[str, Any] = {
        "sides": sides,
        "gain": gain,
        "gains": [round(g, 4) for g in gains],
        "prediction": predicted,
        "agreement": agreement(gain, predicted),
    }
    out["status"] = "complete" if gain and not problems else ("doubtful" if gain else "failed")
    out["reason"] = "; ".join(problems) or None
    return out


def predicted_gain(
    run: dict[str, Any], offloads: Sequence[Offload], functions: Sequence[str] = ()
) -> dict[str, Any] | None:
    """The queueing model's prediction for these offloads, from the baseline's report: the what-if
    of the blocker the rewritten calls sit in (``functions``), or of a callee that is itself a
    blocker; None when the run has no model or the model has no what-if for them."""
    model = (run.get("report") or {}).get("model")
    if not isinstance(model, dict) or not isinstance(entries := model.get("what_ifs"), list):
        return None
    names = {o.callee.rsplit(".", 1)[-1] for o in offloads} | {f.rsplit(".", 1)[-1] for f in functions}
    before = model.get("measured_rps")
    for e in entries:
        if not isinstance(e, dict) or str(e.get("function", "")).rsplit(".", 1)[-1] not in names:
            continue
        after = e.get("predicted_rps")
        if isinstance(before, int | float) and isinstance(after, int | float) and before > 0:
            return {"function": e["function"], "rps_before": before, "rps_after": after, "gain": after / before}
    return None


def _applied_functions(folder: Path) -> list[str]:
    """The functions the server rewrote call sites in."""
    found: set[str] = set()
    for path in sorted(folder.glob("applied-*.json")):
        for module in read_json(path).values():
            found.update(str(s["function"]) for s in module["rewritten"] if s.get("function"))
    return sorted(found)


def agreement(gain: dict[str, float] | None, predicted: dict[str, Any] | None) -> str:
    """One sentence: does the measured gain agree with the prediction?"""
    if gain is None:
        return "no measured gain (no complete pair of runs)"
    if predicted is None:
        return NO_PREDICTION
    p = float(predicted["gain"])
    low, high = gain["low"] * (1 - AGREEMENT_MARGIN), gain["high"] * (1 + AGREEMENT_MARGIN)
    if low <= p <= high:
        return f"agrees: predicted ×{times(p)}, measured ×{times(gain['median'])}"
    side = "over" if p > high else "under"
    return f"disagrees: the model {side}estimates — predicted ×{times(p)}, measured ×{times(gain['median'])}"


def _fmt(s: dict[str, float] | None, unit: str = "", scale: float = 1.0, digits: int = 0) -> str:
    if s is None:
        return "-"
    f = f"{{:.{digits}f}}"
    text = f.format(s["median"] * scale) + unit
    return text + (f" ({f.format(s['low'] * scale)}–{f.format(s['high'] * scale)})" if s["n"] > 1 else "")


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The answer in a few lines (printed by the CLI, and the head of whatif.md)."""
    w = data["whatif"]
    sides, gain = w.get("sides") or {}, w.get("gain")
    rows = [["", "req/s", "p95 ms", "loop busy"]]
    for side in SIDES:
        s = sides.get(side) or {}
        rows.append([side, _fmt(s.get("rps")), _fmt(s.get("p95_ms")), _fmt(s.get("loop_busy"), "%", 100)])
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r, widths, strict=True)).rstrip() for r in rows]
    if gain:
        spread = f" (pairs: {', '.join('×' + times(g) for g in w['gains'])})" if gain["n"] > 1 else ""
        lines.append(f"measured gain: ×{times(gain['median'])} req/s{spread}")
    pred = w.get("prediction")
    if pred:
        lines.append(
            f"predicted gain: ×{times(pred['gain'])} ({pred['rps_before']:.0f} → {pred['rps_after']:.0f} req/s)"
        )
        lines.append(f"verdict: {w.get('agreement')}")
    else:
        lines.append(f"predicted gain: {NO_PREDICTION}")
    return lines


def whatif_markdown(data: dict[str, Any]) -> str:
    w = data["whatif"]
    offloads = ", ".join(f"`{o['module']}:{o['callee']}` to a {o['to']}" for o in w["offloads"])
    lines = [f"# What if: {offloads}", "", *[f"    {x}" for x in summary_lines(data)], ""]
    lines += ["## Call sites rewritten in memory (no file changed)", ""]
    lines += [f"- {Path(s['file']).name}:{s['line']} in `{s['function']}`: `{s['before']}` → `{s['after']}`"
              for s in w["rewritten"]]  # fmt: skip
    if w["left_alone"]:
        lines += ["", "## Call sites left alone", ""]
        lines += [f"- {Path(s['file']).name}:{s['line']}: `{s['before']}` — {s['reason']}" for s in w["left_alone"]]
    lines += ["", "## Runs (interleaved, each on a fresh server)", ""]
    lines += [f"- {v['dir']}: {v.get('status')} ([report]({v['dir']}/report.html))" for v in data["variants"]]
    if w.get("reason"):
        lines += ["", f"Problems: {w['reason']}"]
    return "\n".join(lines) + "\n"


def whatif_html(data: dict[str, Any]) -> str:
    """The same as ``whatif.md``, as a page beside the suite's comparison."""
    from loadlab.render.html import STYLE, esc, inline_code

    w = data["whatif"]
    offloads = ", ".join(f"`{o['module']}:{o['callee']}` to a {o['to']}" for o in w["offloads"])
    summary = esc("\n".join(summary_lines(data)))
    sites = "".join(
        f"<li>{esc(Path(s['file']).name)}:{s['line']} in <code>{esc(s['function'])}</code>: "
        f"<code>{esc(s['before'])}</code> → <code>{esc(s['after'])}</code></li>"
        for s in w["rewritten"]
    )
    alone = "".join(
        f"<li>{esc(Path(s['file']).name)}:{s['line']}: <code>{esc(s['before'])}</code> — "
        f"{inline_code(s['reason'])}</li>"
        for s in w["left_alone"]
    )
    runs = "".join(
        f'<li><a href="{esc(v["dir"])}/report.html">{esc(v["dir"])}</a>: {esc(v.get("status"))}</li>'
        for v in data["variants"]
    )
    problems = f'<div class="v warning">{esc(w["reason"])}</div>' if w.get("reason") else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loadlab whatif</title>
<style>{STYLE}</style></head><body>
<h1>What if: {inline_code(offloads)}</h1>
<div class="meta">Both versions under the same load, interleaved, each on a fresh server; the fix was made
in memory (no file changed). <a href="comparison.html">The comparison</a> has every figure.</div>{problems}
<pre>{summary}</pre>
<h2>Call sites rewritten</h2><ul>{sites}</ul>
{f"<h2>Call sites left alone</h2><ul>{alone}</ul>" if alone else ""}
<h2>Runs</h2><ul>{runs}</ul>
</body></html>"""


def whatif_command(run: dict[str, Any], module: str, callee: str, to: str) -> str:
    """The ``loadlab whatif`` command that tests offloading ``callee`` in ``module`` under this
    run's load (its app, locustfile, tags, users and duration)."""
    cfg = run.get("config") or {}
    argv = ["loadlab", "whatif", "--app", str(cfg.get("app", ""))]
    if cfg.get("factory"):
        argv.append("--factory")
    locustfile = cfg.get("locustfile")
    if locustfile:
        inside = Path(locustfile).resolve().is_relative_to(Path.cwd())
        argv += ["--locustfile", os.path.relpath(locustfile) if inside else str(locustfile)]
    if cfg.get("tags"):
        argv += ["-T", ",".join(cfg["tags"])]
    argv += ["-u", str(cfg.get("users", 20)), "-t", f"{float(cfg.get('duration', 8)):g}"]
    for key, default in (("workers", 1), ("server", "uvicorn"), ("loop", "auto")):  # the server as it ran
        if cfg.get(key, default) != default:
            argv += [f"--{key}", str(cfg[key])]
    argv += ["--offload", f"{module}:{callee}"] + (["--to", to] if to != "thread" else [])
    return shlex.join(argv)


def blocker_command(run: dict[str, Any], blocker: dict[str, Any]) -> str | None:
    """The command that measures a loop blocker moved off the loop, or None when its source is not
    here to find the call (a run from elsewhere) or no ``async def`` calls it.

    A blocker that is the ``async def`` itself (``time.sleep`` inside a handler) is offloaded by the
    call on its line; a plain ``def`` (a helper) by the calls to it from ``async def`` functions,
    looked for in its own module first, then in the rest of its package.
    """
    file = blocker.get("file")
    if not file or not Path(file).is_file():
        return None
    kind = blocker.get("kind")
    to = "process" if kind in ("cpu", "gil") and not blocker.get("gil_released") else "thread"
    name = str(blocker["function"]).rsplit(".", 1)[-1]
    path = Path(file)
    found = _call_on_line(path, name, int(blocker.get("line") or 0))
    if found is None:
        package = sorted(_package_root(path).rglob("*.py"))[:MAX_SCANNED] if _is_package(path.parent) else []
        for candidate in [path, *package]:
            callee = _async_caller(candidate, name)
            if callee is not None:
                found = (candidate, callee)
                break
    if found is None:
        return None
    return whatif_command(run, _module_name(found[0]), found[1], to)


MAX_SCANNED = 300  # files of a package searched for an async caller of a blocking helper


def _tree(path: Path) -> ast.Module | None:
    try:
        return _parsed(str(path), path.stat().st_mtime_ns)
    except OSError:
        return None


@functools.lru_cache(maxsize=512)
def _parsed(path: str, mtime_ns: int) -> ast.Module | None:
    """A source file's syntax tree, parsed once per version (a report has several blockers)."""
    try:
        return ast.parse(Path(path).read_bytes(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None


def _call_on_line(path: Path, function: str, line: int) -> tuple[Path, str] | None:
    """The outermost call on ``line`` of ``async def function`` in ``path``, as written."""
    tree = _tree(path)
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.AsyncFunctionDef) and node.name == function:
            calls = [c for c in ast.walk(node) if isinstance(c, ast.Call) and c.lineno == line]
            if calls:
                return path, ast.unparse(calls[0].func)
    return None


def _async_caller(path: Path, function: str) -> str | None:
    """How an ``async def`` in ``path`` calls ``function`` (``helper`` or ``mod.helper``), if one does."""
    tree = _tree(path)
    for node in ast.walk(tree) if tree else ():
        if isinstance(node, ast.AsyncFunctionDef):
            for c in ast.walk(node):
                if isinstance(c, ast.Call) and _last_name(c.func) == function:
                    return ast.unparse(c.func)
    return None


def _last_name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _is_package(folder: Path) -> bool:
    return (folder / "__init__.py").exists()


def _package_root(path: Path) -> Path:
    root = path.parent
    while _is_package(root.parent):
        root = root.parent
    return root


def _module_name(path: Path) -> str:
    """``pkg.sub.mod`` for ``pkg/sub/mod.py``: up the folders that are packages."""
    parts = [path.stem]
    folder = path.parent
    while (folder / "__init__.py").exists():
        parts.insert(0, folder.name)
        folder = folder.parent
    return ".".join(parts)
