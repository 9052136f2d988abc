"""The run in time: the app's loop stalls as a trace (Perfetto, chrome://tracing, speedscope's
time-ordered view) and the flame graph of the worst second.

py-spy's raw profile, the analysis' source, has no timestamps (its chrometrace format has them,
but one recording writes one format, and a second py-spy would double the cost). The app's own
stall records do: each has its start, its duration and the loop thread's stack. So the time
dimension comes from them — every time the loop was blocked at least the watchdog's threshold
(25 ms while profiling), not the short calls in between.
"""

from __future__ import annotations

import re
from typing import Any

from loadlab.analysis.stacks import is_library_file
from loadlab.render.flamegraph import Node, fold_library_chains, render_svg

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def _frames(stall: dict[str, Any]) -> list[tuple[str, str]]:
    """The stall's stack, outermost first, as (label, file)."""
    out = []
    for text in stall.get("stack") or []:
        m = _FRAME.match(str(text))
        out.append((str(text), m.group("file") if m else ""))
    return out


def stalls_trace(stalls: list[dict[str, Any]], load_started_at: float | None) -> dict[str, Any]:
    """Chrome's trace-event JSON of the stalls: one row, the event loop; each stall a stack of
    nested complete events, in microseconds since the load began."""
    zero = load_started_at if load_started_at is not None else min((s["started_at"] for s in stalls), default=0)
    events: list[dict[str, Any]] = [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "event loop (stalls ≥ threshold)"}}
    ]
    for stall in sorted(stalls, key=lambda s: float(s.get("started_at") or 0)):
        ts = (float(stall.get("started_at") or 0) - zero) * 1e6
        dur = float(stall.get("duration_ms") or 0) * 1e3
        args = {k: stall.get(k) for k in ("function", "route", "kind", "file", "line")}
        for label, _ in _frames(stall) or [(str(stall.get("function") or "?"), "")]:
            events.append(
                {"name": label, "cat": "stall", "ph": "X", "ts": ts, "dur": dur, "pid": 1, "tid": 1, "args": args}
            )
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def worst_second(series: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The second of the run whose loop lag peaked highest, as (t, lag max ms)."""
    points = [(float(p["t"]), float(p["lag_ms"]["max"])) for p in series if isinstance(p.get("lag_ms"), dict)]
    return max(points, key=lambda p: p[1]) if points else None


def window_flamegraph(
    stalls: list[dict[str, Any]], load_started_at: float, start: float, end: float, title: str
) -> str | None:
    """The flame graph of what blocked the loop between ``start`` and ``end`` (seconds since the
    load began): each stall's stack weighted by the milliseconds it overlaps the window."""
    root = Node(f"stalls between {start:.1f} s and {end:.1f} s", "root")
    for stall in stalls:
        s0 = float(stall.get("started_at") or 0) - load_started_at
        s1 = s0 + float(stall.get("duration_ms") or 0) / 1000
        overlap_ms = round(1000 * (min(s1, end) - max(s0, start)))
        if overlap_ms <= 0:
            continue
        node = root
        node.count += overlap_ms
        frames = _frames(stall)
        for label, file in frames:  # the app's own frames of the loop thread: all of them held it
            node = node.child(label, "library" if file and is_library_file(file) else "blocking")
            node.count += overlap_ms
    if root.count == 0:
        return None
    covered = root.count / (1000 * (end - start))
    subtitle = (
        f"The app's stall records in that window: the loop was blocked {root.count} ms of the "
        f"{1000 * (end - start):.0f} ms ({covered:.0%}); widths are milliseconds."
    )
    return render_svg(root, title, subtitle, folded=fold_library_chains(root))
