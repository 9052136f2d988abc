"""The baseline gate's result as Markdown (for ``$GITHUB_STEP_SUMMARY``) and as HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadlab.analysis.regress import blocker_text
from loadlab.render.html import STYLE, diff_flamegraph_section, esc


def markdown(result: dict[str, Any]) -> str:
    head = "❌ regression" if result["regressed"] else "✅ no regression"
    out = [f"## loadlab baseline gate: {head}", "", f"`{result['current']}` against `{result['baseline']}`", ""]
    out += [f"Decision: {result['method']}.", "", "| rule | baseline | current | change | p | verdict |"]
    out.append("|---|---:|---:|---:|---:|---|")
    for r in result["rules"]:
        if r.get("change") is None:
            out.append(f"| {r['rule']} | | | | | {r.get('note', '')} |")
            continue
        verdict = "**REGRESSION**" if r["regression"] else ("within the noise" if r.get("exceeds") else "ok")
        p = "" if r["p_value"] is None else f"{r['p_value']:.3g}"
        base, now = r["text"].split(": ", 1)[1].split(" (", 1)[0].split(" → ")
        out.append(f"| {r['rule']} | {base} | {now} | {r['change']:+.1f} | {p} | {verdict} |")
    if result["blockers"]:
        out += ["", "**What changed on the event loop**", ""]
        out += [f"- {blocker_text(b)}" for b in result["blockers"]]
    if result.get("flamegraph_diff"):
        out += ["", f"Differential flame graph of the event loop: `{result['flamegraph_diff']}`."]
    return "\n".join(out) + "\n"


def html_report(result: dict[str, Any], diff: Path | None) -> str:
    head = "regression" if result["regressed"] else "no regression"
    level = "problem" if result["regressed"] else "ok"
    rows = "".join(
        f"<tr><td>{esc(r['rule'])}</td><td>{esc(r.get('text') or r.get('note', ''))}</td></tr>" for r in result["rules"]
    )
    blockers = "".join(f'<div class="v {"problem" if b["status"] in ("appeared", "grew") else "ok"}">'
                       f"{esc(blocker_text(b))}</div>" for b in result["blockers"])  # fmt: skip
    flame = diff_flamegraph_section(diff, "current against baseline")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>loadlab baseline gate</title>
<style>{STYLE}</style></head><body><h1>loadlab baseline gate: {esc(head)}</h1>
<div class="meta">{esc(result["current"])} against {esc(result["baseline"])}</div>
<div class="v {level}">Decision: {esc(result["method"])}.</div>
<h2>Rules</h2><table><tr><th>rule</th><th>result</th></tr>{rows}</table>
<h2>What changed on the event loop</h2>{blockers or '<p class="small">No function moved.</p>'}
{flame}</body></html>"""
