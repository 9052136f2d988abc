"""Re-analyse stored runs and summarise them for the terminal. Reads run folders; never runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loadlab.analysis.attribution import analyse_profile
from loadlab.analysis.compare import compare, display_names
from loadlab.analysis.mix import measure_demands
from loadlab.analysis.stacks import Profile, read_raw
from loadlab.analysis.theory import canary_damage, theory_table
from loadlab.analysis.verdicts import BLOCKER_SHARE, lock_ceilings, model_of, verdicts
from loadlab.render import html, markdown
from loadlab.render.flamegraph import render_flamegraph
from loadlab.render.speedscope import to_speedscope
from loadlab.render.timeline import stalls_trace, window_flamegraph, worst_second
from loadlab.results import (
    RAW_PROFILE,
    RUN_JSON,
    StoredDataError,
    aggregated_row,
    canary_row,
    load_run,
    write_json,
)


def _run_dirs(run_dir: Path) -> list[Path]:
    data = load_run(run_dir)
    if data.get("kind") == "suite":
        return [run_dir / v["dir"] for v in data.get("variants", [])]
    return [run_dir]


def reanalyse(run_dir: Path) -> None:
    """Recompute ``analysis`` from each run's raw profile. The result is computed in full before
    anything is written, so a bad profile leaves ``run.json`` as it was."""
    for d in _run_dirs(run_dir):
        data = load_run(d)
        raw = d / RAW_PROFILE
        if not raw.exists():
            raise FileNotFoundError(f"{d} has no {RAW_PROFILE} (was it run with --no-profile?)")
        profile = read_raw(raw)
        if not profile.total:
            raise StoredDataError(f"{raw} holds no samples: nothing to analyse; run.json was left as it was")
        analysis = analyse_profile(
            profile, routes_file=d / "routes.json", stalls=data.get("stalls"), loop_samples=data.get("loop_samples")
        )
        data["analysis"] = analysis
        write_json(d / RUN_JSON, data)


def _row(name: str, data: dict[str, Any]) -> list[str]:
    agg: dict[str, Any] = dict(aggregated_row(data) or {})
    canary: dict[str, Any] = dict(canary_row(data) or {})
    loop = data.get("analysis", {}).get("loop", {})
    busy = loop.get("busy_share")
    blockers = loop.get("blockers") or []
    # Only the user's code is a finding; the server's and framework's own work is not a blocker.
    top = next((b for b in blockers if b.get("file") and b["share"] >= BLOCKER_SHARE), None) if busy else None
    blocker = f"{top['function']} {top['share']:.0%} ({top['kind']})" if top else f"none ≥ {BLOCKER_SHARE:.0%}"
    requests, failures = agg.get("requests", 0), agg.get("failures", 0)
    failed = f"{failures:,}/{requests:,} ({failures / requests:.0%})" if failures and requests else f"{failures}"
    return [
        name,
        data.get("status", "?"),
        f"{agg.get('rps', 0):.0f}" if agg else "-",
        failed if agg else "-",
        f"{agg.get('p95_ms'):.0f}" if agg.get("p95_ms") is not None else "-",
        f"{canary.get('p95_ms'):.0f}" if canary.get("p95_ms") is not None else "-",
        f"{busy:.0%}" if busy is not None else "-",
        blocker,
    ]


def summary_text(run_dir: Path) -> str:
    """A short table of the run (or of each variant of a suite) and where its files are."""
    header = ["run", "status", "req/s", "failures", "p95 ms", "canary p95 ms", "loop busy", "top loop blocker"]
    rows = [header]
    problems = []
    for d in _run_dirs(run_dir):
        data = load_run(d)
        name = data.get("variant") or d.name
        rows.append(_row(name, data))
        if data.get("status") != "complete":
            reason = str(data.get("reason") or "").splitlines() or [""]
            problems.append(f"{name} {data.get('status')}: {reason[0]}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [""] + problems if problems else []
    lines.append("")
    lines.append(f"run folder: {run_dir}")
    first = _run_dirs(run_dir)[0]
    if (first / "flamegraph.svg").exists():
        lines.append(f"flame graphs: {first / 'flamegraph-loop.svg'} (the event loop), flamegraph.svg (all threads)")
    if (run_dir / "comparison.html").exists():
        lines.append(f"comparison report (open this first): {run_dir / 'comparison.html'}")
    elif (run_dir / "report.html").exists():
        lines.append(f"report (open this first): {run_dir / 'report.html'}")
    return "\n".join(lines)


FLAME_GRAPHS = (
    # artefact key, file, what it shows, on-CPU only, event-loop threads only
    ("flamegraph_loop", "flamegraph-loop.svg", "the event loop thread", False, True),
    ("flamegraph", "flamegraph.svg", "all threads, idle included", False, False),
    ("flamegraph_cpu", "flamegraph-cpu.svg", "on-CPU", True, False),
)


def write_flame_graphs(run_dir: Path, run: dict[str, Any], profile: Profile) -> None:
    """The three flame graphs and the speedscope file of a run, from its (parsed) raw profile."""
    title = run.get("variant") or run.get("config", {}).get("app", "run")
    if run.get("status") != "complete":
        title += " (partial)"
    busy = ((run.get("analysis") or {}).get("loop") or {}).get("busy_share")
    extra = f"Event loop busy {busy:.0%} of its samples." if busy is not None else ""
    artefacts = run.setdefault("artefacts", {})
    loop_alone = ((run.get("profiler") or {}).get("on_demand") or {}).get("started") is False
    for key, name, what, on_cpu, loop_only in FLAME_GRAPHS:
        if loop_alone and not loop_only:  # py-spy never started: the app's loop stacks are all there is
            what += ": only the loop ran, so py-spy never started"
        svg = render_flamegraph(
            profile, f"{title} — {what}", on_cpu_only=on_cpu, subtitle_extra=extra, loop_only=loop_only
        )
        (run_dir / name).write_text(svg, encoding="utf-8")
        artefacts[key] = name
    write_json(run_dir / "profile.speedscope.json", to_speedscope(profile, title))
    artefacts["speedscope"] = "profile.speedscope.json"
    write_timeline(run_dir, run, title)


def write_timeline(run_dir: Path, run: dict[str, Any], title: str) -> None:
    """The loop's stalls as a trace, and the flame graph of the worst second (see render.timeline)."""
    stalls, start = run.get("stalls") or [], run.get("load_started_at")
    artefacts = run.setdefault("artefacts", {})
    if not stalls or start is None:
        return
    write_json(run_dir / "loop-stalls.trace.json", stalls_trace(stalls, start))
    artefacts["stalls_trace"] = "loop-stalls.trace.json"
    worst = worst_second(run.get("timeseries") or [])
    if worst is None:
        return
    t, lag = worst
    svg = window_flamegraph(
        stalls, start, t - 1, t, f"{title} — the worst second ({t - 1:g}–{t:g} s, loop lag up to {lag:.0f} ms)"
    )
    if svg is not None:
        (run_dir / "flamegraph-worst-second.svg").write_text(svg, encoding="utf-8")
        artefacts["flamegraph_worst_second"] = "flamegraph-worst-second.svg"


def render_run(run_dir: Path, profile: Profile | None = None) -> Path:
    """Write the flame graphs (if the run has a profile), ``report.html`` and ``report.md`` of one
    run (not a suite) from its stored data; store the verdicts and theory in ``run.json`` too.
    ``profile`` saves parsing the raw profile again when the caller already has it."""
    run = load_run(run_dir)
    raw = run_dir / RAW_PROFILE
    if profile is None and raw.exists() and run.get("analysis"):
        profile = read_raw(raw)
    if profile is not None:
        write_flame_graphs(run_dir, run, profile)
    # The stations each route held and for how long: measured once, kept with the run.
    run["demands"] = measure_demands(run)
    model = model_of(run)
    report = {
        "verdicts": verdicts(run),
        "model": model,
        "theory": theory_table(run),
        "canary": canary_damage(run),
        "locks": lock_ceilings(run),
    }
    (run_dir / "report.html").write_text(html.run_report(run_dir, run, report), encoding="utf-8")
    (run_dir / "report.md").write_text(markdown.run_report(run, report), encoding="utf-8")
    run["report"] = report
    run["artefacts"].update({"report_html": "report.html", "report_md": "report.md"})
    write_json(run_dir / RUN_JSON, run)
    return run_dir / "report.html"


def render(run_dir: Path) -> Path:
    """Re-render a stored run or suite: each run's report, and a suite's comparison."""
    data = load_run(run_dir)
    if data.get("kind") != "suite":
        return render_run(run_dir)
    for d in _run_dirs(run_dir):
        render_run(d)
    return write_comparison([run_dir], run_dir)


def _named_runs(paths: list[Path]) -> tuple[list[tuple[str, Path, dict[str, Any]]], list[str]]:
    """Each run to compare (a suite stands for its variants) with its name (the variant's, else
    the folder's) and record, and notes. A run folder given more than once (the same resolved
    path: twice on the command line, or alone and inside a suite) counts once, with a note."""
    given: dict[Path, list[Path]] = {}
    for p in paths:
        given.setdefault(p.resolve(), []).append(p)
    out: list[tuple[str, Path, dict[str, Any]]] = []
    notes: list[str] = []
    seen: set[Path] = set()
    for same in given.values():
        if len(same) > 1:
            notes.append(f"{same[0]} was given {len(same)} times; it counts once")
        for d in _run_dirs(same[0]):
            if d.resolve() in seen:
                notes.append(f"{d} was given more than once (on its own and in a suite); it counts once")
                continue
            seen.add(d.resolve())
            data = load_run(d)
            out.append((data.get("variant") or d.name, d, data))
    return out, notes


def write_comparison(paths: list[Path], out_dir: Path) -> Path:
    """Compare runs (suites expand to their variants); write comparison.html/.md/.json into ``out_dir``.

    Runs are repeats only when they share a name and a setup (app, locustfile, variant or tags);
    runs sharing just a name are named apart. A folder given twice counts once. Notes on either
    are comparison.json's ``notes``, and a list in comparison.md and .html."""
    named, notes = _named_runs(paths)
    runs = [(name, data) for name, _, data in named]
    result = compare(runs)
    result["notes"] = notes + result.get("notes", [])
    shown, _ = display_names(runs)  # the name each run is grouped under in ``result``
    out_dir.mkdir(parents=True, exist_ok=True)
    links: dict[str, str] = {}
    for name, (_, d, _) in zip(shown, named, strict=True):
        report = d / "report.html"
        if report.exists():
            links.setdefault(name, os.path.relpath(report, out_dir))
    # The first verdicts of each run (problems sort first), so the comparison's first screen
    # says what blocked and what to do, not only how much faster a variant was.
    findings: dict[str, list[dict[str, str]]] = {}
    for name, (_, data) in zip(shown, runs, strict=True):
        if name not in findings:
            findings[name] = verdicts(data)
    diff = None
    if len(paths) == 2:  # two folders: the second's event loop against the first's
        from loadlab.baseline import run_dirs, write_diff_flamegraph

        diff = write_diff_flamegraph(run_dirs(paths[0]), run_dirs(paths[1]), out_dir)
    page = html.comparison_report(result, links, findings, diff)
    (out_dir / "comparison.html").write_text(page, encoding="utf-8")
    (out_dir / "comparison.md").write_text(markdown.comparison(result), encoding="utf-8")
    write_json(out_dir / "comparison.json", result)
    return out_dir / "comparison.html"
