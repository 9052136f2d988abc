"""Self-contained HTML reports (they open offline from disk): one per run, one per comparison.

Renderers only present: every figure comes from the stored run data and the analysis functions, and
every table from :mod:`loadlab.render.sections` (shared with the Markdown report); what is HTML's
own is the layout, the embedded charts and flame graphs, and the links.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from loadlab.render import charts
from loadlab.render.sections import Section, Table, Verdicts, comparison_table, run_sections

STYLE = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;
color:#222}
h1{font-size:22px;margin-bottom:4px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#666;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left} th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.v{padding:8px 12px;margin:6px 0;border-radius:4px;font-size:14px;line-height:1.6}
.problem{background:#fde8e8;border-left:5px solid #d62728} .warning{background:#fff4e0;border-left:5px solid #ff9f1c}
.ok{background:#e8f6e8;border-left:5px solid #2ca02c} img{max-width:100%} code{background:#f2f2f2;padding:0 3px}
.charts img{display:block;margin:8px 0} .small{font-size:12px;color:#555}
"""


def esc(value: Any) -> str:
    return html.escape(str(value))


def inline_code(text: str) -> str:
    # `x` in verdict sentences becomes <code>x</code>, everything else escaped.
    parts = esc(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _svg(path: Path, alt: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<p class="small">{esc(alt)} — <a href="{esc(path.name)}">open on its own</a> to click-zoom.</p>'
        f'<img alt="{esc(alt)}" src="data:image/svg+xml;base64,{data}">'
    )


def _trace_link(run_dir: Path) -> str:
    if not (run_dir / "loop-stalls.trace.json").exists():
        return ""
    return (
        '<p class="small">The loop\'s stalls in time: <a href="loop-stalls.trace.json">loop-stalls.trace.json</a> '
        "— open it in https://ui.perfetto.dev, chrome://tracing or https://www.speedscope.app (time order).</p>"
    )


NUMBER = re.compile(r"-?\d[\d.,]*(%|×)?")  # a figure: aligned right


def table(t: Table, links: Mapping[str, str] | None = None) -> str:
    """The table's rows (or its ``empty`` sentence); figures align right. A first cell named in
    ``links`` links there."""
    if not t.rows and t.empty:
        return f"<p>{esc(t.empty)}</p>"
    links = links or {}

    def cell(i: int, c: str) -> str:
        if i == 0 and c in links:
            return f'<td><a href="{esc(links[c])}">{esc(c)}</a></td>'
        return f'<td class="n">{esc(c)}</td>' if NUMBER.fullmatch(c) else f"<td>{esc(c)}</td>"

    head = "".join(f"<th>{esc(h)}</th>" for h in t.headers)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in t.rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict_html(verdicts: Iterable[tuple[str, str]]) -> str:
    """``(level, text)`` pairs as coloured boxes."""
    return "".join(f'<div class="v {esc(level)}">{inline_code(text)}</div>' for level, text in verdicts)


def section(s: Section, links: Mapping[str, str] | None = None) -> str:
    """A section with its ``h2`` (its id the anchor)."""
    head = f'<h2 id="{esc(s.id)}">{esc(s.title)}</h2>'
    if isinstance(s, Verdicts):
        return head + verdict_html(s.items)
    note = f'<p class="small">{esc(s.note)}</p>' if s.note else ""
    return f"{head}\n{note}{table(s, links)}"


def run_report(run_dir: Path, run: dict[str, Any], report: dict[str, Any]) -> str:
    """The HTML of one run: verdicts first, then charts, theory, canary, stats and flame graphs."""
    r = run_sections(run, report)
    verdicts, *tables = r.sections
    history = charts.locust_history(run_dir / "locust_stats_history.csv")
    series = run.get("timeseries", [])
    loop = (run.get("analysis") or {}).get("loop") or {}
    blockers = loop.get("blockers", [])
    if "framework_layers" in loop:
        # "(library or runtime code)" shown by the framework's layers that made it up
        layers = [
            {"function": f"{x['package']}: {x['layer']}", "kind": "framework", "share": x["share"]}
            for x in loop["framework_layers"]
        ]
        blockers = sorted([b for b in blockers if b.get("file")] + layers, key=lambda b: -b["share"])
    tables_html = "\n".join(section(t) for t in tables)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loadlab: {esc(r.title)}</title>
<style>{STYLE}</style></head><body>
<h1>loadlab report: {esc(r.title)}</h1>
<div class="meta">{esc(r.meta)}</div>
{section(verdicts)}
<h2 id="charts">Over time</h2><div class="charts">
{_img(charts.throughput_chart(history, (run.get("ui") or {}).get("edits")), "throughput and latency")}
{charts.loop_chart_svg(series, run.get("stalls") or [], run.get("load_started_at")) or ""}
{_img(charts.threadpool_chart(series), "threadpool occupancy")}
{_img(charts.blockers_chart(blockers), "loop blockers")}</div>
{tables_html}
<h2 id="flamegraphs">Flame graphs</h2>
{_svg(run_dir / "flamegraph-loop.svg", "The event loop thread: red frames held it") or "<p>No profile.</p>"}
{_svg(run_dir / "flamegraph-worst-second.svg", "The worst second: what the app's stall records caught then")}
{_trace_link(run_dir)}
{_svg(run_dir / "flamegraph.svg", "All threads, idle included, grouped by role")}
{_svg(run_dir / "flamegraph-cpu.svg", "On-CPU only")}
<p class="small">Also: <a href="profile.speedscope.json">profile.speedscope.json</a> (open in speedscope.app),
<a href="locust.html">Locust's report</a>, <a href="run.json">run.json</a>.</p>
</body></html>"""


def diff_flamegraph_section(path: Path | None, what: str) -> str:
    """The differential flame graph of the event loop (:mod:`loadlab.render.flamediff`), embedded."""
    if path is None or not path.exists():
        return ""
    return (
        f'<h2>The event loop, {esc(what)}</h2><p class="small">Red: a larger share of the loop than before '
        "(dashed outline: new); blue: a smaller one; width: the later runs.</p>"
        + _svg(path, "differential flame graph")
    )


def comparison_report(
    result: dict[str, Any],
    links: dict[str, str],
    findings: dict[str, list[dict[str, str]]],
    diff: Path | None = None,
) -> str:
    names = [r["name"] for r in result["rows"]]
    rps = [float((r["rps"] or {}).get("median") or 0) for r in result["rows"]]
    busy = [100.0 * float((r["loop_busy"] or {}).get("median") or 0) for r in result["rows"]]
    notes = "".join(f'<div class="v warning">{esc(n)}</div>' for n in result.get("notes", []))
    notes = f"<h2>Notes</h2>{notes}" if notes else ""
    # Each sentence takes the colour of its run's worst verdict (problems sort first).
    sentences = "".join(
        f'<div class="v {esc((findings.get(r["name"]) or [{"level": "ok"}])[0]["level"])}">'
        f"{inline_code(r['sentence'])}</div>"
        for r in result["rows"]
    )
    found = "".join(
        f"<h3>{esc(name)}</h3>{verdict_html((v['level'], v['text']) for v in vs[:2])}"
        for name, vs in findings.items()
        if vs
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loadlab comparison</title>
<style>{STYLE}</style></head><body>
<h1>loadlab comparison</h1><div class="meta">Each run against the first ({esc(result["baseline"])}).
"n.s." = inside the noise: ranges overlap, or under 10% apart with one run each.</div>
{notes}<h2>In one sentence each</h2>{sentences}
<h2>What each run found</h2>{found}
{section(comparison_table(result), links)}
<div class="charts">{_img(charts.comparison_chart(names, rps, "requests/s (endpoints, canary aside)"), "throughput")}
{_img(charts.comparison_chart(names, busy, "% of event-loop samples busy (not parked)"), "loop busy")}</div>
{diff_flamegraph_section(diff, "the second folder against the first")}
</body></html>"""
