"""Charts of a run with matplotlib, as PNG bytes for embedding in a self-contained HTML page.

matplotlib is imported on first use, not with this module: it takes ~0.4 s of CPU, which every
``loadlab profile`` paid before its run began. :func:`preload` imports it from a thread while the
server starts (its own start-up runs on the other core), so the report finds it ready.
"""

from __future__ import annotations

import csv
import functools
import html
import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loadlab.results import AGGREGATED

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SIZE = (7.2, 2.6)


@functools.cache
def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")  # must precede pyplot
    import matplotlib.pyplot as plt

    return plt


def preload() -> None:
    """Import matplotlib in a daemon thread, now, rather than when the first chart is drawn."""
    threading.Thread(target=_pyplot, name="loadlab-import-matplotlib", daemon=True).start()


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    _pyplot().close(fig)
    return buf.getvalue()


def locust_history(csv_path: Path) -> list[dict[str, float]]:
    """Locust's ``_stats_history.csv`` Aggregated rows: seconds since start, rps, percentiles."""
    if not csv_path.exists():
        return []
    points, t0 = [], None
    with open(csv_path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row.get("Name") != AGGREGATED:
                continue
            t = float(row["Timestamp"])
            t0 = t if t0 is None else t0

            points.append(
                {
                    "t": t - t0,
                    "rps": _float(row, "Requests/s"),
                    "p50": _float(row, "50%"),
                    "p95": _float(row, "95%"),
                    "p99": _float(row, "99%"),
                    "users": _float(row, "User Count"),
                }
            )
    return points


def _float(row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return float("nan")  # Locust writes N/A before the first response


def throughput_chart(history: list[dict[str, float]], edits: list[dict[str, Any]] | None = None) -> bytes | None:
    """Requests/s and latency over the run; ``edits`` (a web UI test's changes of the user count,
    seconds from its start) are drawn as dotted lines labelled with the new count."""
    if not history:
        return None
    t = [p["t"] for p in history]
    fig, ax = _pyplot().subplots(figsize=SIZE)
    ax.plot(t, [p["rps"] for p in history], color="#1f77b4", label="requests/s")
    for edit in edits or []:
        ax.axvline(float(edit["t"]), color="#555555", linestyle=":", linewidth=1)
        ax.annotate(
            f"→ {edit['users']} users", (float(edit["t"]), 0.0), xycoords=("data", "axes fraction"),
            xytext=(3, 4), textcoords="offset points", fontsize=7, color="#555555",
        )  # fmt: skip
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests/s", color="#1f77b4")
    ax2 = ax.twinx()
    for key, color in (("p50", "#2ca02c"), ("p95", "#ff7f0e"), ("p99", "#d62728")):
        ax2.plot(t, [p[key] for p in history], color=color, linestyle="--", label=f"{key} ms")
    ax2.set_ylabel("latency (ms)")
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles=handles, loc="upper left", fontsize=7, ncol=4, framealpha=0.8)
    ax.set_title("Throughput and latency (Locust, all endpoints)", fontsize=10)
    return _png(fig)


def loop_chart_svg(
    series: list[dict[str, Any]], stalls: list[dict[str, Any]], load_started_at: float | None
) -> str | None:
    """The event-loop lag chart as inline SVG, with each recorded stall marked (a red tick at the
    top, a band as long as the stall): hovering one names the function, its place and its stack."""
    pts = [p for p in series if isinstance(p.get("lag_ms"), dict)]
    if not pts:
        return None
    t = [p["t"] for p in pts]
    fig, ax = _pyplot().subplots(figsize=SIZE)
    ax.plot(t, [p["lag_ms"]["p99"] for p in pts], color="#ff7f0e", label="loop lag p99 (ms)")
    ax.plot(t, [p["lag_ms"]["max"] for p in pts], color="#d62728", label="loop lag max (ms)")
    marked: list[dict[str, Any]] = []
    if load_started_at is not None:
        top = max(max(p["lag_ms"]["max"] for p in pts), 1.0)
        for stall in stalls[:MAX_STALL_MARKS]:
            start = float(stall.get("started_at") or 0) - load_started_at
            if not t[0] - 1 <= start <= t[-1] + 1:
                continue
            width = float(stall.get("duration_ms") or 0) / 1000
            i = len(marked)
            ax.axvspan(start, start + width, color="#d62728", alpha=0.18, linewidth=0, gid=f"stall-band-{i}")
            ax.plot([start], [top * 1.06], marker="v", color="#d62728", markersize=6, gid=f"stall-{i}")
            marked.append(stall)
        if marked:
            ax.plot([], [], marker="v", color="#d62728", linestyle="", label=f"loop stalls ({len(marked)}; hover one)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("ms late")
    ax.set_title("Event-loop lag, each second (how late a 10 ms timer fired)", fontsize=10)
    ax.legend(fontsize=8)
    buf = io.StringIO()
    fig.tight_layout()
    fig.savefig(buf, format="svg")
    _pyplot().close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]  # inline in HTML: no XML prolog or doctype
    for i, stall in enumerate(marked):
        tip = html.escape(_stall_tip(stall))
        svg = svg.replace(f'<g id="stall-{i}">', f'<g id="stall-{i}" class="stall"><title>{tip}</title>', 1)
    return svg


MAX_STALL_MARKS = 300


def _stall_tip(stall: dict[str, Any]) -> str:
    where = f"{stall.get('file') or '?'}:{stall.get('line') or '?'}"
    head = f"{stall.get('function') or '?'} blocked the loop {float(stall.get('duration_ms') or 0):.0f} ms"
    kind = f" ({stall['kind']})" if stall.get("kind") not in (None, "unknown") else ""
    route = f" on {stall['route']}" if stall.get("route") else ""
    stack = "\n".join(f"  {frame}" for frame in (stall.get("stack") or [])[-12:])
    return f"{head}{kind}{route}\n{where}" + (f"\nstack (innermost last):\n{stack}" if stack else "")


def threadpool_chart(series: list[dict[str, Any]]) -> bytes | None:
    pts = [p for p in series if isinstance(p.get("threadpool"), dict)]
    if not pts:
        return None
    t = [p["t"] for p in pts]
    fig, ax = _pyplot().subplots(figsize=SIZE)
    ax.plot(t, [p["threadpool"]["borrowed"] for p in pts], color="#1f77b4", label="threads busy")
    ax.plot(t, [p["threadpool"]["total"] for p in pts], color="#7f7f7f", linestyle=":", label="thread limit")
    ax.plot(t, [p["threadpool"]["waiting"] for p in pts], color="#d62728", label="tasks waiting for a thread")
    ax.set_xlabel("seconds")
    ax.set_title("AnyIO threadpool occupancy and queue", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def blockers_chart(blockers: list[dict[str, Any]]) -> bytes | None:
    rows = [b for b in blockers if b["share"] > 0][:8]
    if not rows:
        return None
    fig, ax = _pyplot().subplots(figsize=(SIZE[0], 0.45 * len(rows) + 1.0))
    colors = {"wait": "#2ca02c", "cpu": "#d62728", "unknown": "#7f7f7f", "framework": "#9ecae1"}
    labels = [f"{b['function']} ({b['kind']})" for b in rows][::-1]
    ax.barh(
        labels,
        [100 * b["share"] for b in rows][::-1],
        color=[colors.get(b["kind"], "#7f7f7f") for b in rows][::-1],
    )
    ax.set_xlabel("% of event-loop samples")
    ax.set_xlim(0, 100)
    ax.set_title("What the event loop was running (not waiting for I/O)", fontsize=10)
    return _png(fig)


def comparison_chart(names: list[str], values: list[float], label: str) -> bytes | None:
    if not names:
        return None
    fig, ax = _pyplot().subplots(figsize=(SIZE[0], 0.45 * len(names) + 1.0))
    ax.barh(names[::-1], values[::-1], color="#1f77b4")
    ax.set_xlabel(label)
    return _png(fig)
