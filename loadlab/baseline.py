"""``loadlab compare BASELINE CURRENT --fail-on RULES``: the baseline gate, from stored runs.

Each side is a run folder, or a folder of repeats (``loadlab smoke --repeats N``), or a suite.
Writes ``comparison.json``, ``comparison.md`` (for ``$GITHUB_STEP_SUMMARY``), ``comparison.html``
and, when both sides were recorded with py-spy (``--profile``), ``flamegraph-loop-diff.svg``: the
event-loop thread of CURRENT against BASELINE. Reads run folders; never runs anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadlab.analysis.regress import blocker_text, judge, parse_rules
from loadlab.analysis.stacks import ProfileFormatError, read_raw
from loadlab.render import regress as render
from loadlab.render.flamediff import loop_tree, render_diff_svg
from loadlab.results import RAW_PROFILE, load_run, write_json

DIFF_SVG = "flamegraph-loop-diff.svg"


def run_dirs(path: Path) -> list[Path]:
    """The run folders of one side: a suite's (or repeats') members, else the folder itself."""
    data = load_run(path)
    if data.get("kind") == "suite":
        return [path / v["dir"] for v in data.get("variants", []) if (path / v["dir"] / "run.json").is_file()]
    return [path]


def write_diff_flamegraph(base: list[Path], now: list[Path], out_dir: Path) -> Path | None:
    """``flamegraph-loop-diff.svg`` in ``out_dir``: the event loop of the ``now`` runs against the
    ``base`` runs; None (nothing written) unless every run has a py-spy profile."""
    raws = [[d / RAW_PROFILE for d in side] for side in (base, now)]
    if not all(raws) or not all(p.is_file() and p.stat().st_size for side in raws for p in side):
        return None
    try:
        trees = [loop_tree(read_raw(p) for p in side) for side in raws]
    except ProfileFormatError:
        return None
    subtitle = (
        f"{trees[1].count} loop samples of {len(now)} current run(s) against {trees[0].count} of "
        f"{len(base)} baseline run(s); width = current"
    )
    svg = render_diff_svg(trees[0], trees[1], "event loop: what changed from the baseline", subtitle)
    path = out_dir / DIFF_SVG
    path.write_text(svg, encoding="utf-8")
    return path


def write_gate(baseline: Path, current: Path, fail_on: str, out_dir: Path) -> dict[str, Any]:
    """Judge CURRENT against BASELINE by the rules in ``fail_on``; write the outputs; return the result."""
    rules = parse_rules(fail_on)
    base_dirs, now_dirs = run_dirs(baseline), run_dirs(current)
    result = judge(rules, [load_run(d) for d in base_dirs], [load_run(d) for d in now_dirs])
    result.update(baseline=str(baseline), current=str(current), fail_on=fail_on)
    out_dir.mkdir(parents=True, exist_ok=True)
    diff = write_diff_flamegraph(base_dirs, now_dirs, out_dir)
    result["flamegraph_diff"] = diff.name if diff else None
    write_json(out_dir / "comparison.json", result)
    (out_dir / "comparison.md").write_text(render.markdown(result), encoding="utf-8")
    (out_dir / "comparison.html").write_text(render.html_report(result, diff), encoding="utf-8")
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The gate's verdict for the terminal: one line per rule, then what changed on the loop."""
    head = "REGRESSION" if result["regressed"] else "no regression"
    lines = [f"baseline gate: {head} ({result['method']})"]
    for row in result["rules"]:
        lines.append("  " + (row.get("text") or f"{row['rule']}: {row.get('note', 'not judged')}"))
    if result["blockers"]:
        lines.append("what changed on the event loop:")
        lines += [f"  {blocker_text(b)}" for b in result["blockers"]]
    return lines
