"""The run in time, from the app's stall records: the trace and the worst second's flame graph."""

from __future__ import annotations

from typing import Any

from loadlab.render.timeline import stalls_trace, window_flamegraph, worst_second

T0 = 1_000_000.0  # the load began here (epoch seconds)


def _stall(at: float, ms: float, *stack: str) -> dict[str, Any]:
    return {"started_at": T0 + at, "duration_ms": ms, "function": stack[-1].split(" ")[0], "route": "/r",
            "kind": "wait", "file": "/app/main.py", "line": 3, "stack": list(stack)}  # fmt: skip


STALLS = [
    _stall(0.5, 100, "handler (/app/main.py:10)", "slow_lookup (/app/main.py:3)"),
    _stall(2.2, 300, "handler (/app/main.py:10)", "slow_lookup (/app/main.py:3)"),
    _stall(2.6, 500, "other (/app/main.py:20)"),  # half of it in the third second
]


def test_the_trace_holds_each_stall_as_nested_events_in_time() -> None:
    trace = stalls_trace(STALLS, T0)
    spans = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], round(e["ts"]), round(e["dur"])) for e in spans[:2]] == [
        ("handler (/app/main.py:10)", 500_000, 100_000),
        ("slow_lookup (/app/main.py:3)", 500_000, 100_000),
    ]
    assert len(spans) == 5 and all(e["tid"] == 1 and e["pid"] == 1 for e in spans)
    assert trace["traceEvents"][0]["ph"] == "M"  # the row is named


def test_the_worst_second_is_the_highest_lag_and_its_graph_weighs_milliseconds() -> None:
    series = [{"t": 1.0, "lag_ms": {"max": 90}}, {"t": 3.0, "lag_ms": {"max": 480}}, {"t": 4.0}]
    assert worst_second(series) == (3.0, 480.0)
    svg = window_flamegraph(STALLS, T0, 2.0, 3.0, "worst")
    assert svg is not None
    assert "blocked 700 ms of the 1000 ms (70%)" in svg  # 300 ms + the 400 ms of the last stall before 3 s
    assert "slow_lookup (/app/main.py:3)\n300 samples" in svg and "other (/app/main.py:20)\n400 samples" in svg
    assert window_flamegraph(STALLS, T0, 5.0, 6.0, "empty") is None
