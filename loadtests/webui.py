"""Two tabs in Locust's web UI with the app's inner state, next to Locust's own charts.

* **App internals**: event-loop lag (p99 and max, now and worst of the run), AnyIO threadpool
  occupancy (borrowed/total, waiting for a thread), requests in flight, loop stalls.
* **Loop stalls**: the latest times the loop was blocked, with the function that blocked it.

Built on Locust's documented extension points, no custom front-end code: ``extended_tabs`` and
``extended_tables`` in ``web_ui.template_args`` declare the tabs, and an ``after_request`` hook
adds their rows (``extended_stats``) to the ``/stats/requests`` answer the UI polls every 2 s.
The raw state is also served as JSON at ``/loadlab/app-state``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flask import Response, jsonify, request
from locust import events
from locust.env import Environment

from loadtests import appstate

INTERNALS_TAB = "app-internals"
STALLS_TAB = "loop-stalls"

INTERNALS_COLUMNS = [
    {"key": "metric", "title": "App metric"},
    {"key": "now", "title": "Now"},
    {"key": "worst", "title": "Worst this run"},
    {"key": "meaning", "title": "What it tells"},
]
STALLS_COLUMNS = [
    {"key": "age", "title": "When"},
    {"key": "duration", "title": "Loop blocked for"},
    {"key": "function", "title": "Function that blocked it"},
    {"key": "where", "title": "Where"},
    {"key": "route", "title": "Route"},
]


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{float(value):.1f} ms"


def internals_rows(state: appstate.AppState) -> list[dict[str, str]]:
    """The App internals table; a single explanatory row when the app cannot be read."""
    if state.loop is None:
        reason = state.error or "no test running yet: start one to poll /debug/loop"
        return [{"metric": "App state", "now": "unavailable", "worst": "", "meaning": reason}]
    loop = state.loop
    lag, pool, inflight = loop.get("lag_ms", {}), loop.get("threadpool", {}), loop.get("inflight", {})
    window = lag.get("window_s", 10)
    since = int(loop.get("stalls_total", 0)) - (state.stalls_at_start or 0)
    age = time.time() - state.polled_at if state.polled_at else 0.0
    rows = [
        {
            "metric": "Event-loop lag p99",
            "now": _ms(lag.get("p99")),
            "worst": _ms(state.worst_lag_p99_ms),
            "meaning": f"How late the loop wakes up (last {window:g} s). Above ~10 ms something blocks it.",
        },
        {
            "metric": "Event-loop lag max",
            "now": _ms(lag.get("max")),
            "worst": _ms(state.worst_lag_max_ms),
            "meaning": "Longest single block: every request in the process waited this long.",
        },
        {
            "metric": "Threadpool busy",
            "now": f"{pool.get('borrowed', 0)} / {pool.get('total', 0)} threads",
            "worst": f"{state.worst_borrowed} / {pool.get('total', 0)}",
            "meaning": "AnyIO worker threads running def routes and dependencies right now.",
        },
        {
            "metric": "Threadpool queue",
            "now": f"{pool.get('waiting', 0)} waiting",
            "worst": f"{state.worst_waiting} waiting",
            "meaning": "def calls waiting for a free thread: the pool is the bottleneck.",
        },
        {
            "metric": "Requests in flight",
            "now": str(inflight.get("total", 0)),
            "worst": "",
            "meaning": ", ".join(f"{r} {n}" for r, n in sorted(inflight.get("by_route", {}).items())) or "-",
        },
        {
            "metric": "Loop stalls",
            "now": f"{since} this run",
            "worst": f"{loop.get('stalls_total', 0)} since start",
            "meaning": f"Loop blocked ≥ {loop.get('stall_ms', 0):g} ms; see the Loop stalls tab.",
        },
        {
            "metric": "Polled",
            "now": f"{age:.0f} s ago",
            "worst": "",
            "meaning": f"pid {loop.get('pid', '?')}" + (f"; last poll failed: {state.error}" if state.error else ""),
        },
    ]
    return rows


def _short_path(path: str) -> str:
    # Paths under the working directory read better relative: target_app/routes/io.py.
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def stalls_rows(state: appstate.AppState, limit: int = 10) -> list[dict[str, str]]:
    rows = []
    for stall in state.stalls[:limit]:
        started = stall.get("started_at")
        age = f"{max(0.0, time.time() - float(started)):.0f} s ago" if started else "?"
        rows.append(
            {
                "age": age,
                "duration": _ms(stall.get("duration_ms")),
                "function": str(stall.get("function") or "?"),
                "where": f"{_short_path(str(stall.get('file') or '?'))}:{stall.get('line') or '?'}",
                "route": str(stall.get("route") or "-"),
            }
        )
    if not rows:
        none = "no stall recorded" if state.loop is not None else "no data yet"
        rows.append({"age": "-", "duration": "-", "function": none, "where": "-", "route": "-"})
    return rows


@events.init.add_listener
def _extend_web_ui(environment: Environment, **_: Any) -> None:
    web_ui = environment.web_ui
    if web_ui is None:
        return
    # Added to, not replaced: `loadlab ui` adds its Profile tab the same way.
    web_ui.template_args.setdefault("extended_tabs", []).extend(
        [{"title": "App internals", "key": INTERNALS_TAB}, {"title": "Loop stalls", "key": STALLS_TAB}]
    )
    web_ui.template_args.setdefault("extended_tables", []).extend(
        [{"key": INTERNALS_TAB, "structure": INTERNALS_COLUMNS}, {"key": STALLS_TAB, "structure": STALLS_COLUMNS}]
    )

    @web_ui.app.after_request
    def add_app_state(response: Response) -> Response:
        if request.path.rstrip("/").endswith("/stats/requests") and response.is_json:
            body = response.get_json()
            body.setdefault("extended_stats", []).extend(
                [
                    {"key": INTERNALS_TAB, "data": internals_rows(appstate.state)},
                    {"key": STALLS_TAB, "data": stalls_rows(appstate.state)},
                ]
            )
            response.set_data(json.dumps(body))
        return response

    @web_ui.app.route("/loadlab/app-state")
    def app_state() -> Response:
        s = appstate.state
        return jsonify(
            {
                "loop": s.loop,
                "stalls": s.stalls,
                "error": s.error,
                "polls": s.polls,
                "worst_lag_p99_ms": s.worst_lag_p99_ms,
                "worst_lag_max_ms": s.worst_lag_max_ms,
                "internals": internals_rows(s),
            }
        )
