"""Self-contained HTML reports (they open offline from disk): one per run, one per comparison.

Renderers only present: every figure comes from the stored run data and the analysis functions.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from loadlab.render import charts
from loadlab.render._format import comparison_cell

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


def table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="n">{esc(c)}</td>' if isinstance(c, int | float) else f"<td>{esc(c)}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict_html(verdicts: list[dict[str, str]]) -> str:
    return "".join(f'<div class="v {esc(v["level"])}">{inline_code(v["text"])}</div>' for v in verdicts)


def _fmt(value: Any, spec: str = "{:.0f}") -> Any:
    return "-" if value is None else spec.format(value) if isinstance(value, int | float) else value


def run_report(run_dir: Path, run: dict[str, Any], report: dict[str, Any]) -> str:
    """The HTML of one run: verdicts first, then charts, theory, canary, stats and flame graphs."""
    cfg = run.get("config", {})
    title = run.get("variant") or cfg.get("app", "run")
    history = charts.locust_history(run_dir / "locust_stats_history.csv")
    series = run.get("timeseries", [])
    blockers = ((run.get("analysis") or {}).get("loop") or {}).get("blockers", [])
    theory_rows = [
        [
            r["endpoint"],
            r["model"],
            _fmt(r["service_ms"], "{:.1f}"),
            r["users"],
            _fmt(r["predicted_rps"]),
            _fmt(r["measured_rps"]),
            _fmt(r["ratio"], "{:.0%}"),
            r["limited_by"] or "",
        ]
        for r in report["theory"]
    ]
    canary = report.get("canary")
    canary_html = (
        table(
            ["endpoint", "idle p50 ms", "under load p50 ms", "under load p99 ms", "p50 factor", "p99 factor"],
            [
                [
                    canary["endpoint"],
                    canary["idle_p50_ms"],
                    canary["load_p50_ms"],
                    canary["load_p99_ms"],
                    f"{canary['p50_factor']:g}×",
                    f"{canary['p99_factor']:g}×",
                ]
            ],
        )
        if canary
        else "<p>No canary row in this run.</p>"
    )
    stats_rows = [
        [
            s["name"],
            s["requests"],
            s["failures"],
            s["rps"],
            _fmt(s["p50_ms"]),
            _fmt(s["p95_ms"]),
            _fmt(s["p99_ms"]),
        ]
        for s in run.get("stats", [])
    ]
    status = run.get("status", "?") + (f" — {run['reason']}" if run.get("reason") else "")
    tags = f" -T {' '.join(cfg['tags'])}" if cfg.get("tags") else ""
    profiler = f"py-spy {cfg.get('rate')} Hz" if cfg.get("profile") else "no profiler"
    meta = (
        f"{cfg.get('app')} · {cfg.get('locustfile')}{tags} · {cfg.get('users')} users · {cfg.get('duration')} s"
        f" · {profiler} · status: {status} · {run.get('started_at', '')}"
    )
    theory_heads = ["endpoint", "model", "service ms", "users", "predicted req/s", "measured req/s"]
    theory_heads += ["measured/predicted", "limited by"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loadlab: {esc(title)}</title>
<style>{STYLE}</style></head><body>
<h1>loadlab report: {esc(title)}</h1>
<div class="meta">{esc(meta)}</div>
<h2 id="verdicts">Verdicts</h2>{verdict_html(report["verdicts"])}
<h2 id="charts">Over time</h2><div class="charts">
{_img(charts.throughput_chart(history), "throughput and latency")}
{_img(charts.loop_chart(series), "event-loop lag")}
{_img(charts.threadpool_chart(series), "threadpool occupancy")}
{_img(charts.blockers_chart(blockers), "loop blockers")}</div>
<h2 id="theory">Theory vs measured</h2>
<p class="small">Ceiling by Little's law for the model each endpoint followed (inferred from where its
samples ran); service time = measured on the idle server after the load. See the README's "Reading the report".</p>
{table(theory_heads, theory_rows)}
<h2 id="canary">Collateral damage (canary)</h2>{canary_html}
<h2 id="stats">Endpoints (Locust)</h2>
{table(["name", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms"], stats_rows)}
<h2 id="flamegraphs">Flame graphs</h2>
{_svg(run_dir / "flamegraph-loop.svg", "The event loop thread: red frames held it") or "<p>No profile.</p>"}
{_svg(run_dir / "flamegraph.svg", "All threads, idle included, grouped by role")}
{_svg(run_dir / "flamegraph-cpu.svg", "On-CPU only")}
<p class="small">Also: <a href="profile.speedscope.json">profile.speedscope.json</a> (open in speedscope.app),
<a href="locust.html">Locust's report</a>, <a href="run.json">run.json</a>.</p>
</body></html>"""


def comparison_report(result: dict[str, Any], links: dict[str, str], findings: dict[str, list[dict[str, str]]]) -> str:
    baseline = result["baseline"]
    rows = []
    for r in result["rows"]:
        name = f'<a href="{esc(links[r["name"]])}">{esc(r["name"])}</a>' if r["name"] in links else esc(r["name"])
        cells = [comparison_cell(r, k, baseline) for k in ("rps", "p95_ms", "canary_p95_ms")]
        cells.append(comparison_cell(r, "loop_busy", baseline, "{:.0%}"))
        rows.append(f"<tr><td>{name}</td><td class='n'>{r['runs']}</td>" + "".join(f"<td>{esc(c)}</td>" for c in cells))
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
    found = "".join(f"<h3>{esc(name)}</h3>{verdict_html(vs[:2])}" for name, vs in findings.items() if vs)
    heads = ["run", "runs", "req/s", "p95 ms", "canary p95 ms", "loop busy"]
    table_head = "<table><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loadlab comparison</title>
<style>{STYLE}</style></head><body>
<h1>loadlab comparison</h1><div class="meta">Each run against the first ({esc(result["baseline"])}).
"n.s." = inside the noise: ranges overlap, or under 10% apart with one run each.</div>
{notes}<h2>In one sentence each</h2>{sentences}
<h2>What each run found</h2>{found}
<h2>Figures</h2>
{table_head}{"".join(rows)}</table>
<div class="charts">{_img(charts.comparison_chart(names, rps, "requests/s (endpoints, canary aside)"), "throughput")}
{_img(charts.comparison_chart(names, busy, "% of event-loop samples busy (not parked)"), "loop busy")}</div>
</body></html>"""
