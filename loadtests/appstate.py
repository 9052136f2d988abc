"""The app's inner state, polled from ``/debug/loop`` and ``/debug/stalls`` while a test runs.

One poller per Locust process (a greenlet, started by ``test_start``, stopped after one last
read at ``test_stop``). It keeps the latest snapshot and the worst values of the run, which the
web UI tab (:mod:`loadtests.webui`) shows and the loop-lag gate (:mod:`loadtests.thresholds`)
judges. An app without loadlab's instrumentation simply has no state: ``error`` says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import requests
from locust import events
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests._host import host_of

POLL_INTERVAL_S = 1.0
SETTLE_S = 2.0
"""Polls in the test's first seconds show the app's lag window mostly from *before* the test
(a freshly started app shows its own start-up there): they update ``loop``, not the worst values."""
logger = logging.getLogger("loadlab.appstate")


@dataclass
class AppState:
    """What the poller knows; ``worst_*`` are maxima since the current test started."""

    loop: dict[str, Any] | None = None
    stalls: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    polled_at: float | None = None
    polls: int = 0
    worst_lag_p99_ms: float = 0.0
    worst_lag_max_ms: float = 0.0
    worst_borrowed: int = 0
    worst_waiting: int = 0
    stalls_at_start: int | None = None
    judged_polls: int = 0
    test_started: float = field(default_factory=time.monotonic)

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def record(self, loop: dict[str, Any], stalls: list[dict[str, Any]], *, judged: bool = True) -> None:
        """Keep a poll; only a ``judged`` one may raise the worst values of the run."""
        self.loop, self.stalls, self.error = loop, stalls, None
        self.polled_at = time.time()
        self.polls += 1
        if self.stalls_at_start is None:
            self.stalls_at_start = int(loop.get("stalls_total", 0))
        lag = loop.get("lag_ms", {})
        pool = loop.get("threadpool", {})
        if not judged:
            return
        self.worst_lag_p99_ms = max(self.worst_lag_p99_ms, float(lag.get("p99", 0.0)))
        self.worst_lag_max_ms = max(self.worst_lag_max_ms, float(lag.get("max", 0.0)))
        self.worst_borrowed = max(self.worst_borrowed, int(pool.get("borrowed", 0)))
        self.worst_waiting = max(self.worst_waiting, int(pool.get("waiting", 0)))
        self.judged_polls += 1


state = AppState()
_poller: gevent.Greenlet | None = None
_session = requests.Session()


def poll_once(environment: Environment, timeout: float = 2.0, *, judged: bool | None = None) -> bool:
    """Read both debug endpoints once into :data:`state`; return whether it worked.

    ``judged`` defaults to whether the test has run for :data:`SETTLE_S` seconds.
    """
    if judged is None:
        judged = time.monotonic() - state.test_started >= SETTLE_S
    base = host_of(environment)
    try:
        loop = _session.get(f"{base}/debug/loop", timeout=timeout)
        loop.raise_for_status()
        stalls = _session.get(f"{base}/debug/stalls", timeout=timeout)
        stalls.raise_for_status()
        state.record(loop.json(), list(stalls.json().get("stalls", []))[:20], judged=judged)
        return True
    except (requests.RequestException, ValueError) as exc:
        state.error = f"{base}/debug/loop unreadable: {type(exc).__name__}: {exc}"[:300]
        return False


def _poll_forever(environment: Environment) -> None:
    while True:
        poll_once(environment)
        gevent.sleep(POLL_INTERVAL_S)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    global _poller
    if isinstance(environment.runner, WorkerRunner):
        return
    state.reset()
    if _poller is None or _poller.dead:
        _poller = gevent.spawn(_poll_forever, environment)


@events.test_stop.add_listener
def _on_test_stop(environment: Environment, **_: Any) -> None:
    global _poller
    if _poller is not None:
        _poller.kill(block=False)
        _poller = None
    if not isinstance(environment.runner, WorkerRunner):
        poll_once(environment)
