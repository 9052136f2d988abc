"""A pytest plugin that fails a test which blocks its event loop, and names the function that did.

Off unless asked. Opt in with ``@pytest.mark.loop_budget(ms=50)`` on a test, ``pytestmark`` on a
module, or ``--loop-budget=50ms`` (ini: ``loop_budget``) for every async test of the run.
``--loop-budget-mode=report`` (or ``@pytest.mark.loop_budget(ms=50, fail=False)``) lets the
tests pass and lists what blocked in the terminal summary; ``--loop-budget-mode=off`` ignores
the markers.

While a watched test runs, the same :class:`~loadlab.instrument.LoopLagProbe` and
:class:`~loadlab.instrument.StallWatchdog` as in the target app watch the loop: a heartbeat task
on the loop and a thread that, once the heartbeat is late by more than the budget, takes the loop
thread's stack and keeps the innermost application frame. Being timing-based, it catches anything
that holds the loop — ``time.sleep``, a sync driver, CPU work, a C call — not only a fixed list of
known blocking functions.

Finding the test's loop: the probe must be started *on* the loop that runs the test, and that loop
is created by whichever runner the test uses (pytest-asyncio's ``asyncio.Runner``, AnyIO's test
runner), with its own loop scope. So the plugin does not look for the loop at all: in a
``pytest_runtest_call`` wrapper it swaps ``item.obj`` for a coroutine function that starts the
watch, awaits the test, and stops the watch; both runners then run that coroutine on their loop,
because both read ``item.obj`` only when the test runs (pytest-asyncio in ``runtest()``, AnyIO in
``pytest_pyfunc_call``). An autouse async fixture would be less robust: pytest-asyncio's strict
mode skips unmarked async fixtures, AnyIO only runs async fixtures for tests that request
``anyio_backend``, and a fixture's loop scope can differ from the test's. Hooking
``pytest_pyfunc_call`` is too late for pytest-asyncio, which has already wrapped the coroutine
in a synchronous function by then. Only the test body is watched, not its fixtures.

The verdict is given outside the loop, after the test: a stall over budget fails a test that
otherwise passed; a test that failed on its own keeps its failure and gets the stalls as a report
section.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import linecache
import os
import re
import threading
import time
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from loadlab.instrument import LoopLagProbe, Stall, StallWatchdog

MARKER = "loop_budget"
DEFAULT_BUDGET_MS = 50.0
MODES = ("fail", "report", "off")
# The heartbeat of the target app; a tighter budget gets a proportionally faster one.
MAX_HEARTBEAT_S = 0.010
# How long to wait after the test for the heartbeat that ends a stall (the loop is free by then).
SETTLE_TIMEOUT_S = 1.0

_STACK_ENTRY = re.compile(r"^(?P<function>.*) \((?P<file>.*):(?P<line>\d+)\)$")


@dataclass(frozen=True)
class Budget:
    """How long a test may hold its event loop, and whether going over fails it."""

    ms: float
    fail: bool


@dataclass(frozen=True)
class PluginSettings:
    """The run-wide settings, from ``--loop-budget``/``--loop-budget-mode`` or the ini file."""

    ms: float | None  # None: only marked tests are watched
    mode: str  # one of MODES


@dataclass(frozen=True)
class LoopBudgetVerdict:
    """What one watched test did to its loop."""

    nodeid: str
    budget: Budget
    stalls: tuple[Stall, ...]  # over budget, longest first
    failed: bool  # the plugin failed the test for it

    def headline(self, rootdir: Path) -> str:
        return _headline(self.stalls[0], self.budget.ms, rootdir)


_SETTINGS = pytest.StashKey[PluginSettings]()
_VERDICTS = pytest.StashKey[list[LoopBudgetVerdict]]()


def parse_duration_ms(text: str) -> float:
    """``"50"``, ``"50ms"``, ``"0.05s"`` → 50.0. Raises ValueError for anything else or ≤ 0."""
    value = text.strip().lower()
    scale = 1.0
    if value.endswith("ms"):
        value = value[:-2]
    elif value.endswith("s"):
        value, scale = value[:-1], 1000.0
    ms = float(value) * scale
    if not ms > 0 or ms == float("inf"):
        raise ValueError(f"a loop budget must be a positive duration, got {text!r}")
    return ms


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("loadlab", "loadlab: event-loop budget")
    group.addoption(
        "--loop-budget",
        dest="loop_budget",
        default=None,
        metavar="DURATION",
        help="fail any async test that blocks its event loop longer than DURATION "
        "(e.g. 50ms, 0.2s) and name the function that blocked it",
    )
    group.addoption(
        "--loop-budget-mode",
        dest="loop_budget_mode",
        default=None,
        choices=MODES,
        help="fail (default): a test over budget fails; report: it passes and is listed in the "
        "summary; off: ignore loop_budget markers and --loop-budget",
    )
    parser.addini("loop_budget", "default for --loop-budget", default="")
    parser.addini("loop_budget_mode", "default for --loop-budget-mode", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(ms={DEFAULT_BUDGET_MS:g}, fail=True): fail this async test if it blocks its event loop "
        "for longer than ms milliseconds, naming the function that blocked it (fail=False: only report)",
    )
    config.stash[_SETTINGS] = _settings_from(config)
    config.stash[_VERDICTS] = []


def _settings_from(config: pytest.Config) -> PluginSettings:
    raw_ms = config.getoption("loop_budget") or str(config.getini("loop_budget") or "")
    mode = config.getoption("loop_budget_mode") or str(config.getini("loop_budget_mode") or "") or "fail"
    if mode not in MODES:
        raise pytest.UsageError(f"loop_budget_mode must be one of {', '.join(MODES)}, got {mode!r}")
    try:
        ms = parse_duration_ms(raw_ms) if raw_ms else None
    except ValueError:
        raise pytest.UsageError(f"--loop-budget expects a duration (50ms, 0.2s), got {raw_ms!r}") from None
    return PluginSettings(ms=ms, mode=mode)


def budget_for(item: pytest.Item, settings: PluginSettings) -> Budget | None:
    """The budget that applies to ``item``: its closest marker, else the run-wide option.

    Raises ValueError for a marker with arguments it does not understand.
    """
    if settings.mode == "off":
        return None
    marker = item.get_closest_marker(MARKER)
    if marker is None:
        return None if settings.ms is None else Budget(settings.ms, fail=settings.mode == "fail")
    unknown = set(marker.kwargs) - {"ms", "fail"}
    if unknown or len(marker.args) > 1:
        given = [*map(repr, marker.args), *marker.kwargs]
        raise ValueError(f"@pytest.mark.{MARKER} takes ms= and fail= only, got {given}")
    raw = marker.kwargs.get("ms", marker.args[0] if marker.args else None)
    if raw is None:
        ms = settings.ms if settings.ms is not None else DEFAULT_BUDGET_MS
    else:
        ms = parse_duration_ms(str(raw))
    fail = bool(marker.kwargs.get("fail", True)) and settings.mode == "fail"
    return Budget(ms, fail)


class LoopWatch:
    """The probe and watchdog around one test body; start and stop it on the test's loop thread."""

    def __init__(self, budget_ms: float) -> None:
        self.budget_ms = budget_ms
        self.interval_s = min(MAX_HEARTBEAT_S, max(0.001, budget_ms / 1000 / 5))
        self.probe: LoopLagProbe | None = None
        self.watchdog: StallWatchdog | None = None
        self._task: asyncio.Task[None] | None = None
        self.unsupported: str | None = None

    def start(self) -> None:
        from loadlab.instrument import LoopLagProbe, StallWatchdog

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.unsupported = "the test does not run on an asyncio event loop (trio?), so it was not watched"
            return
        # A window far longer than any test, so the probe keeps every lag sample of this one.
        self.probe = LoopLagProbe(interval=self.interval_s, window_s=24 * 3600)
        self._task = loop.create_task(self.probe.run(), name="loadlab-loop-budget-probe")
        # The heartbeat gap includes one interval of the probe's own sleep: waiting for budget +
        # interval means a recorded stall held the loop for at least the budget.
        self.watchdog = StallWatchdog(
            self.probe,
            loop,
            threading.get_ident(),
            stall_ms=self.budget_ms + self.interval_s * 1000,
            loop_native_tid=threading.get_native_id(),
        )
        self.watchdog.start()

    async def settle(self) -> None:
        """Let the heartbeat run once after the test body, so a stall it ended on is complete."""
        if self.probe is None:
            return
        ended = time.monotonic()
        deadline = ended + SETTLE_TIMEOUT_S
        while self.probe.last_beat <= ended and time.monotonic() < deadline:
            await asyncio.sleep(self.interval_s / 2)

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()  # records a stall caught in the act that has just ended
        if self._task is not None:
            self._task.cancel()

    def over_budget(self) -> list[Stall]:
        """Stalls longer than the budget, longest first.

        A lag the probe measured but the watchdog did not catch in the act (its thread can be
        kept off the GIL by a C call that holds it) still counts, with its culprit unknown.
        """
        from loadlab.instrument import Stall

        if self.probe is None or self.watchdog is None:
            return []
        stalls = [s for s in self.watchdog.stalls if s.duration_ms >= self.budget_ms]
        max_lag_ms = float(self.probe.snapshot()["max"])
        if max_lag_ms > self.budget_ms and not stalls:
            stalls.append(
                Stall(
                    started_at=time.time(),
                    duration_ms=round(max_lag_ms + self.interval_s * 1000, 1),
                    function=None,
                    file=None,
                    line=None,
                    route=None,
                )
            )
        return sorted(stalls, key=lambda s: s.duration_ms, reverse=True)


def _watched(
    func: Callable[..., Coroutine[Any, Any, Any]], watch: LoopWatch
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(func)
    async def watched(*args: Any, **kwargs: Any) -> Any:
        watch.start()
        try:
            result = await func(*args, **kwargs)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            # A test that fails right after blocking still gets its stall named, in a report section.
            with contextlib.suppress(Exception):
                await watch.settle()
            raise
        else:
            await watch.settle()
            return result
        finally:
            watch.stop()

    return watched


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    try:
        budget = budget_for(item, item.config.stash[_SETTINGS])
    except ValueError as exc:
        pytest.fail(f"@pytest.mark.{MARKER}: {exc}", pytrace=False)
    if budget is None or not isinstance(item, pytest.Function):
        return (yield)
    original = item.obj
    if not inspect.iscoroutinefunction(original):
        if any(m.name == MARKER for m in item.own_markers):
            item.warn(
                pytest.PytestWarning(
                    f"@pytest.mark.{MARKER} has no effect on a sync test: no event loop runs in its "
                    "thread (Starlette's TestClient runs the app on a loop in another thread; call "
                    "the app through httpx.AsyncClient(transport=httpx.ASGITransport(app)) instead)"
                )
            )
        return (yield)

    watch = LoopWatch(budget.ms)
    item.obj = _watched(original, watch)
    try:
        result = yield
    except BaseException:
        stalls = watch.over_budget()
        if stalls:
            item.add_report_section("call", "loop budget", _describe(stalls, budget.ms, item.config.rootpath))
        raise
    finally:
        item.obj = original

    if watch.unsupported:
        item.warn(pytest.PytestWarning(f"{MARKER}: {watch.unsupported}"))
    stalls = watch.over_budget()
    if stalls:
        item.config.stash[_VERDICTS].append(LoopBudgetVerdict(item.nodeid, budget, tuple(stalls), budget.fail))
        if budget.fail:
            pytest.fail(_describe(stalls, budget.ms, item.config.rootpath), pytrace=False)
    return result


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    verdicts = config.stash.get(_VERDICTS, [])
    if not verdicts:
        return
    rootdir = config.rootpath
    reported = [v for v in verdicts if not v.failed]
    terminalreporter.section("loop budget", sep="=")
    for verdict in verdicts:
        outcome = "FAILED" if verdict.failed else "REPORTED (not failed)"
        terminalreporter.write_line(f"{outcome} {verdict.nodeid}: {verdict.headline(rootdir)}")
    for verdict in reported:  # a failed test already showed its details
        terminalreporter.write_line("")
        terminalreporter.write_line(f"{verdict.nodeid}:")
        terminalreporter.write_line(_describe(list(verdict.stalls), verdict.budget.ms, rootdir))


def _where(file: str | None, line: int | None, rootdir: Path) -> str:
    if file is None:
        return "?"
    try:
        shown = os.path.relpath(file, rootdir) if Path(file).is_relative_to(rootdir) else file
    except ValueError:
        shown = file
    return f"{shown}:{line}"


def _headline(stall: Stall, budget_ms: float, rootdir: Path) -> str:
    if stall.function is None:
        culprit = "(culprit not caught: the stall ended before the watchdog looked, or a C call held the GIL)"
    else:
        culprit = f"by {stall.function}() at {_where(stall.file, stall.line, rootdir)}"
    return f"event loop blocked for {stall.duration_ms:.0f} ms (budget {budget_ms:g} ms) {culprit}"


def _kind(stall: Stall) -> str | None:
    if stall.cpu_share is None:
        return None
    share = f"{stall.cpu_share:.0%} of it on a CPU"
    if stall.kind == "cpu":
        return f"the loop thread was computing ({share})"
    return f"the loop thread was waiting — sleep, I/O or a lock ({share})"


def _describe(stalls: list[Stall], budget_ms: float, rootdir: Path) -> str:
    """The failure message: the longest stall with its application stack, then the others."""
    worst = stalls[0]
    lines = [_headline(worst, budget_ms, rootdir)]
    kind = _kind(worst)
    if kind:
        lines.append(kind)
    if worst.stack:
        lines.append("")
        lines.append("application frames, innermost first:")
        for entry in worst.stack:
            match = _STACK_ENTRY.match(entry)
            if match is None:
                lines.append(f"  {entry}")
                continue
            file, line = match["file"], int(match["line"])
            lines.append(f"  {_where(file, line, rootdir)} in {match['function']}")
            source = linecache.getline(file, line).strip()
            if source:
                lines.append(f"      {source}")
    if len(stalls) > 1:
        lines.append("")
        lines.append(f"{len(stalls)} stalls over budget in this test:")
        for stall in stalls:
            where = _where(stall.file, stall.line, rootdir) if stall.function else "culprit not caught"
            lines.append(f"  {stall.duration_ms:.0f} ms in {stall.function or '?'} ({where})")
    return "\n".join(lines)
