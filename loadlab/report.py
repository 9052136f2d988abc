"""Re-analyse stored runs and summarise them for the terminal. Reads run folders; never runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadlab.analysis.stacks import read_raw
from loadlab.analysis.summary import analyse_profile
from loadlab.results import RUN_JSON, load_run, write_json

RAW_PROFILE = "profile.raw.txt"


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
        analysis = analyse_profile(read_raw(raw), routes_file=d / "routes.json", stalls=data.get("stalls"))
        data["analysis"] = analysis
        write_json(d / RUN_JSON, data)


def _row(name: str, data: dict[str, Any]) -> list[str]:
    stats = {s["name"]: s for s in data.get("stats", [])}
    agg = stats.get("Aggregated", {})
    canary: dict[str, Any] = next((s for n, s in stats.items() if "canary" in n or n == "/health"), {})
    loop = data.get("analysis", {}).get("loop", {})
    busy = loop.get("busy_share")
    blockers = loop.get("blockers") or []
    top = blockers[0] if blockers and busy else None
    blocker = f"{top['function']} {top['share']:.0%} ({top['kind']})" if top else "-"
    return [
        name,
        data.get("status", "?"),
        f"{agg.get('rps', 0):.0f}" if agg else "-",
        f"{agg.get('p95_ms'):.0f}" if agg.get("p95_ms") is not None else "-",
        f"{canary.get('p95_ms'):.0f}" if canary.get("p95_ms") is not None else "-",
        f"{busy:.0%}" if busy is not None else "-",
        blocker,
    ]


def summary_text(run_dir: Path) -> str:
    """A short table of the run (or of each variant of a suite) and where its files are."""
    header = ["run", "status", "req/s", "p95 ms", "canary p95 ms", "loop busy", "top loop blocker"]
    rows = [header]
    for d in _run_dirs(run_dir):
        data = load_run(d)
        rows.append(_row(data.get("variant") or d.name, data))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(f"run folder: {run_dir}")
    first = _run_dirs(run_dir)[0]
    if (first / "flamegraph.svg").exists():
        lines.append(f"flame graphs: {first / 'flamegraph.svg'} (all threads), flamegraph-cpu.svg (on-CPU)")
    return "\n".join(lines)
