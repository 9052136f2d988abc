"""Watch an ASGI app's event loop and threadpool from inside the process.

Four pieces, bundled by :class:`Instrumentation` and attached to any ASGI app by
:func:`instrument` without changes to the app's code:

- :class:`LoopLagProbe` — a task that asks to wake every ``interval`` seconds and records how late
  it woke. Its heartbeat is also what the stall watchdog watches.
- :class:`ThreadpoolGauge` — AnyIO's default limiter: borrowed and total tokens, tasks waiting.
- :class:`InflightTracker` — requests being served right now, per route.
- :class:`StallWatchdog` — a thread that notices when the loop has not run the heartbeat for
  ``stall_ms``, takes the loop thread's stack and records which application function held it.

The debug endpoints (``/metrics``, ``/debug/loop``, ``/debug/stalls``) are served under a prefix
by :class:`InstrumentedApp`, before the wrapped app's routing, so they answer even while the app's
own routes are busy (as long as the loop itself is free). They show file paths, function names, the
route map and the PID, so they answer loopback clients only, plus the networks listed in
``LOADLAB_DEBUG_ALLOW``; anyone else gets the wrapped app's own answer (its 404), as if they did not
exist.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import ctypes
import dis
import functools
import gc
import inspect
import ipaddress
import json
import math
import os
import random
import signal
import sys
import sysconfig
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import asdict, dataclass, field
from types import CodeType, FrameType
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from loadlab.analysis.stacks import enclosing_name

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_STALL_MS = 100.0
HEARTBEAT_INTERVAL_S = 0.010
LAG_WINDOW_S = 10.0
MAX_STALLS = 100
DEBUG_ALLOW_ENV = "LOADLAB_DEBUG_ALLOW"

_REQUEST_SCOPE: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("loadlab_request_scope")


def _library_roots() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.add(os.path.dirname(os.path.abspath(__file__)))  # loadlab itself is never the culprit
    return tuple(os.path.join(os.path.abspath(r), "") for r in roots)


_LIBRARY_ROOTS = _library_roots()


def is_application_file(filename: str) -> bool:
    """True when ``filename`` is the user's code: not the stdlib, site-packages, or loadlab."""
    if not filename or filename.startswith("<"):
        return False
    return not os.path.abspath(filename).startswith(_LIBRARY_ROOTS)


@dataclass(frozen=True)
class FrameInfo:
    function: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.function} ({self.file}:{self.line})"


_ASYNCIO_DIR = os.path.join(os.path.dirname(os.path.abspath(asyncio.__file__)), "")


def application_frames(frame: FrameType | None) -> list[FrameInfo]:
    """The application frames of the callback the loop is running, innermost first.

    The walk ends at the event loop itself (the first ``asyncio`` frame outside the callback), so
    whatever started the loop — ``main()``, a launcher script — is not mistaken for a culprit.
    """
    out: list[FrameInfo] = []
    inside_callback = False
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(_ASYNCIO_DIR):
            if inside_callback:
                break
        else:
            inside_callback = True
            if is_application_file(filename):
                out.append(FrameInfo(frame.f_code.co_qualname, filename, frame.f_lineno))
        frame = frame.f_back
    return out


def percentile(sorted_values: list[float], q: float) -> float:
    """The nearest-rank percentile of already sorted values (0.0 for none): the one definition the
    app's lag probe and the harness share."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class LoopLagProbe:
    """Wakes every ``interval`` seconds on the loop and records how late each wake-up was.

    A healthy loop wakes within a fraction of a millisecond; a loop blocked for 200 ms shows one
    sample of ~200 ms. ``last_beat`` (monotonic seconds) is the heartbeat the watchdog reads.
    """

    def __init__(self, interval: float = HEARTBEAT_INTERVAL_S, window_s: float = LAG_WINDOW_S):
        self.interval = interval
        self.window_s = window_s
        self._samples: deque[tuple[float, float]] = deque(maxlen=int(window_s / interval) * 2)
        self.last_beat = time.monotonic()
        self.histogram: Histogram | None = None

    async def run(self) -> None:
        sleep, now = asyncio.sleep, time.monotonic
        while True:
            before = now()
            await sleep(self.interval)
            after = now()
            lag = max(0.0, after - before - self.interval)
            self.last_beat = after
            self._samples.append((after, lag))
            if self.histogram is not None:
                self.histogram.observe(lag)

    def snapshot(self, window_s: float | None = None) -> dict[str, float]:
        """Lag percentiles (ms) over the last ``window_s`` seconds (at most the whole window).

        A stall still in progress counts too: the heartbeat it is holding back is already late.
        """
        window = min(window_s or self.window_s, self.window_s)
        now = time.monotonic()
        lags = [lag for t, lag in list(self._samples) if t >= now - window]
        overdue = now - self.last_beat - self.interval
        if overdue > 0:
            lags.append(overdue)
        lags.sort()
        return {
            "p50": round(percentile(lags, 0.50) * 1000, 3),
            "p99": round(percentile(lags, 0.99) * 1000, 3),
            "max": round((lags[-1] if lags else 0.0) * 1000, 3),
            "samples": len(lags),
            "window_s": window,
        }


class ThreadpoolGauge:
    """AnyIO's default thread limiter, the one FastAPI's ``def`` routes and dependencies share.

    Read it on the event loop thread only: the limiter belongs to the running loop.
    """

    def snapshot(self) -> dict[str, int]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        return {
            "borrowed": int(limiter.borrowed_tokens),
            "total": int(limiter.total_tokens),
            "waiting": int(limiter.statistics().tasks_waiting),
        }


class InflightTracker:
    """Requests in flight, keyed by the task serving each (what the watchdog looks a stalled task
    up by), grouped by route template once the app's router has matched them."""

    def __init__(self) -> None:
        self.by_task: dict[object, Scope] = {}
        self.resolve: RouteResolver | None = None  # set when the app is known (Instrumentation.start)

    def enter(self, key: object, scope: Scope) -> None:
        self.by_task[key] = scope

    def exit(self, key: object) -> None:
        self.by_task.pop(key, None)

    def snapshot(self) -> dict[str, Any]:
        by_route: dict[str, int] = {}
        for scope in list(self.by_task.values()):
            key = route_of(scope, self.resolve)
            by_route[key] = by_route.get(key, 0) + 1
        return {"total": sum(by_route.values()), "by_route": dict(sorted(by_route.items()))}


RouteResolver = Callable[[Scope], str | None]


def route_of(scope: Scope, resolve: RouteResolver | None = None) -> str:
    """The route template the app's router matched, else the raw path: FastAPI's
    ``scope["route"]``, Litestar's ``scope["path_template"]``, else what ``resolve`` (from
    :func:`route_resolver`: Starlette, Django, Quart, Falcon) finds for the request."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    template = scope.get("path_template")
    if isinstance(template, str):
        return template
    if resolve is not None:
        with contextlib.suppress(Exception):  # the app's router must never break the harness
            found = resolve(scope)
            if found:
                return found
    return str(scope.get("path", "?"))


@dataclass(frozen=True)
class Stall:
    """One stretch of time in which the event loop did not run its heartbeat."""

    started_at: float  # wall-clock seconds since the epoch
    duration_ms: float
    function: str | None
    file: str | None
    line: int | None
    route: str | None
    stack: list[str] = field(default_factory=list)
    cpu_share: float | None = None  # share of the stall the loop thread spent on a CPU
    kind: str = "unknown"  # "cpu" (computing) or "wait" (sleeping, I/O, a lock), when known

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def thread_cpu_ns(native_tid: int) -> int | None:
    """CPU time a thread of this process has used, in ns (Linux ``schedstat``), else None."""
    try:
        with open(f"/proc/self/task/{native_tid}/schedstat", "rb") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


# A stall whose loop thread was on a CPU for more than this share of it was computing.
CPU_SHARE_FOR_CPU = 0.5


class ThreadFiles:
    """A thread's ``/proc`` files (``stat``, ``schedstat``, ``syscall``), kept open and read
    without releasing the GIL.

    Every file read in Python releases the GIL, and a loop thread that was computing Python grabs
    it at once: read that way, it always looks like it is running. ``pread`` called through
    ``ctypes.PyDLL`` keeps the GIL, so what the kernel reports is what the thread does while this
    reader holds it."""

    def __init__(self, native_tid: int) -> None:
        self._fds = {name: os.open(f"/proc/self/task/{native_tid}/{name}", os.O_RDONLY) for name in _THREAD_FILES}
        self._buf = ctypes.create_string_buffer(512)

    def read(self, name: str) -> bytes:
        n = _PREAD(self._fds[name], self._buf, len(self._buf), 0) if _PREAD else -1
        if n < 0:
            return os.pread(self._fds[name], len(self._buf), 0)
        return bytes(self._buf.raw[:n])

    def state(self) -> str:
        """R running or runnable, S asleep, D in uninterruptible I/O, t stopped by a tracer, …"""
        return self.read("stat").rsplit(b")", 1)[1].split()[0].decode()

    def sched_ns(self) -> tuple[int, int]:
        """Time on a CPU, and waiting on a run queue for one, in ns."""
        fields = self.read("schedstat").split()
        return int(fields[0]), int(fields[1])

    def futex(self) -> str | None:
        """The address of the futex the thread waits on right now (a lock, a condition, the GIL),
        or None when it is not in a futex wait."""
        fields = self.read("syscall").split()
        if _FUTEX is None or len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) != _FUTEX:
            return None
        return fields[1].decode()

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)


_THREAD_FILES = ("stat", "schedstat", "syscall")
# The futex system call's number, where the GIL (and every lock) is waited for.
_FUTEX = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)


def gil_futexes(duration_s: float = 0.1) -> frozenset[str]:
    """The futex addresses a thread waits on when it waits for the GIL, learnt by watching one
    that needs nothing else: a thread spinning in Python, read while this one holds the GIL."""
    started = threading.Event()
    done = threading.Event()
    box: list[int] = []

    def spin() -> None:
        box.append(threading.get_native_id())
        started.set()
        while not done.is_set():
            pass

    thread = threading.Thread(target=spin, name="loadlab-gil-probe", daemon=True)
    thread.start()
    seen: set[str] = set()
    try:
        started.wait(1.0)
        files = ThreadFiles(box[0])
        try:
            deadline = time.perf_counter() + duration_s
            while time.perf_counter() < deadline:
                address = files.futex()
                if address is not None:
                    seen.add(address)
                time.sleep(0.001)  # let it take the GIL, so it waits for it again next time
        finally:
            files.close()
    except (OSError, IndexError, ValueError):
        pass
    finally:
        done.set()
        thread.join(1.0)
    return frozenset(seen)


def _pread_keeping_the_gil() -> Any:
    try:
        fn = ctypes.PyDLL(None).pread
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
    fn.restype = ctypes.c_ssize_t
    return fn


_PREAD = _pread_keeping_the_gil()


def _usleep_keeping_the_gil() -> Any:
    try:
        fn = ctypes.PyDLL(None).usleep
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_uint]
    return fn


_USLEEP = _usleep_keeping_the_gil()


def enclosing_frame(frames: list[FrameInfo]) -> FrameInfo:
    """The innermost application frame, named after the function that encloses it."""
    frame = frames[0]
    return FrameInfo(enclosing_name(frame.function), frame.file, frame.line)


LOOP_SAMPLE_ENV = "LOADLAB_LOOP_SAMPLE_HZ"
LOOP_STACKS_ENV = "LOADLAB_LOOP_STACKS_HZ"
KINDS = ("cpu", "wait", "gil")
RECHECK_S = 0.0003
GIL_STRUCT_BYTES = 256


_Counters = tuple[float, int, int, int]  # wall clock, the process's CPU, the sampler's, the loop's


def _others_computed(last: _Counters | None, now: _Counters) -> bool:
    """Other threads of the process (not the loop, not the sampler) were on a CPU most of the
    time between two looks."""
    if last is None or now[0] - last[0] <= 0:
        return False
    others_ns = (now[1] - last[1]) - (now[2] - last[2]) - (now[3] - last[3])
    return others_ns / 1e9 / (now[0] - last[0]) >= CPU_SHARE_FOR_CPU


class LoopSampler:
    """Samples the event-loop thread ``hz`` times a second, for what each blocker *did*: the
    profile says where the loop was, this says how. It looks from the stall watchdog's thread
    (:meth:`ride`), or from a daemon thread of its own (:meth:`start`).

    Each sample is ``cpu`` (computing, or runnable and waiting for a CPU: on a saturated machine
    that is still computing), ``gil`` (waiting for the GIL that other threads of the process hold
    while they compute) or ``wait`` (sleep, I/O, a lock), with the loop's innermost application
    frame and the route it serves (see :meth:`sample` for how). ``cpu`` samples also say whether
    the loop computed without the GIL — C code that releases it (``hashlib``, ``zlib``), where a
    thread does add throughput. Counts are kept per function, line and route.

    The sampler is Python: it runs only when it gets the GIL, so code that keeps the GIL for less
    than the switch interval (5 ms) and then lets go of it at I/O is seldom caught in the act. The
    analysis reads that as evidence too: a function py-spy finds on the loop often but this sampler
    almost never held the GIL all along (``attribution._kinds_from_samples``).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        loop_thread_id: int,
        loop_native_tid: int,
        hz: float,
        route_for_task: Callable[[asyncio.Future[Any]], str | None] | None = None,
    ) -> None:
        self.loop = loop
        self.loop_thread_id = loop_thread_id
        self.loop_native_tid = loop_native_tid
        self.interval_s = 1.0 / hz
        self._route_for_task = route_for_task
        # (function, file, line, route) -> counts of cpu, wait, gil, and cpu with the GIL free
        self.counts: dict[tuple[str, str, int, str | None], list[int]] = {}
        self.ticks = 0
        self.outside_app = 0  # parked, or in the server's and framework's own code
        self.gil_ticks = 0  # the loop waited for a GIL other threads held while they computed
        self.alarm_ticks = 0  # looks that met the loop-stacks timer's alarm (see sample)
        self.stacks: LoopStacks | None = None  # set when the loop's stacks are recorded in the app
        self._files = ThreadFiles(loop_native_tid)
        self._loop_clock = time.pthread_getcpuclockid(loop_thread_id)
        self.gil_futexes: frozenset[str] = frozenset()  # learnt when the sampler starts
        self._last: _Counters | None = None
        self._next = 0.0  # when riding the watchdog: the next look is due (perf_counter)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadlab-loop-sampler", daemon=True)

    def start(self) -> None:
        """Sample from a thread of its own."""
        self._thread.start()

    def ride(self, watchdog: StallWatchdog) -> bool:
        """Sample from the stall watchdog's thread, which wakes every 10 ms anyway, instead of a
        thread of its own: one wake-up fewer per look (each costs ~0.8% of a core on a VM, idle or
        not) and one thread fewer for py-spy to read. False (nothing done) when the watchdog wakes
        less often than this sampler must look."""
        if watchdog.poll_s > self.interval_s * 1.01:
            return False
        watchdog.passengers.append(self._ride)
        return True

    def _ride(self) -> None:
        if self._stop.is_set():
            return
        now = time.perf_counter()
        if now < self._next:
            return
        # On an absolute schedule, so looks average ``hz`` whatever the watchdog's period (ticks / hz
        # is time to the analysis); after a late tick, at most one extra look to catch up.
        self._next = max(self._next + self.interval_s, now - self.interval_s)
        try:
            if not self.gil_futexes and self.ticks == 0:
                self.gil_futexes = gil_futexes()  # learnt at the first look, off the loop's thread
            self.sample()
        except Exception:  # noqa: BLE001 - a sampler's fault must not stop the watchdog it rides
            self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)
        self._files.close()

    def _run(self) -> None:
        self.gil_futexes = gil_futexes()
        while True:  # time.sleep, not Event.wait: 2 of 6 frames fewer for py-spy to read, 100 times a second
            time.sleep(self.interval_s)
            if self._stop.is_set():
                break
            self.sample()

    def sample(self) -> None:
        """Take one sample (also callable directly, e.g. from a test).

        Each sample reads, holding the GIL, the loop thread's state and frame at that instant,
        and its counters over the time since the last sample. Holding the GIL is what makes the
        state tell: a loop thread still running now runs C code that released the GIL; one asleep
        outside a futex waits for I/O or a timer; one in the GIL's futex (its address learnt at
        start, :func:`gil_futexes`) waits for the GIL — taken from it by this sampler while it ran
        Python, or held by other threads if they computed meanwhile; one in another futex waits
        for a lock. One wake-up and one look per sample: each costs the loop a GIL hand-over.
        """
        files = self._files
        try:
            now = (time.perf_counter(), time.process_time_ns(), time.thread_time_ns(), self._loop_cpu_ns())
        except (OSError, ValueError, IndexError):
            self._stop.set()  # the loop thread is gone
            return
        last, self._last = self._last, now
        frames = application_frames(sys._current_frames().get(self.loop_thread_id))
        self.ticks += 1
        if not frames:
            # Parked, or in the server's and framework's own code: only whether it was starved
            # of the GIL counts (no second look, which would cost the loop time). It cannot have
            # been unless other threads computed: only then is the loop's state read (an idle
            # loop's looks read no /proc file: half of what they cost).
            self.outside_app += 1
            if _others_computed(last, now) and self._starved_of_gil():
                self.gil_ticks += 1
            return
        try:
            state = files.state()
        except (OSError, ValueError, IndexError):
            self._stop.set()
            return
        if state not in ("R", "S", "D"):
            self.outside_app += 1  # stopped by a profiler this instant
            return
        gil_free = 0
        if state == "R" and self._still_running():
            kind, gil_free = "cpu", 1
        elif state == "R":
            kind = "cpu"  # it was handing the GIL over to this sampler: computing with the GIL
        elif (futex := files.futex()) is None or (self.gil_futexes and not self._is_gil(futex)):
            kind = "wait"  # a timer, I/O, or a lock
        elif not self.gil_futexes:
            self.outside_app += 1  # the GIL's futex is unknown here: a lock and the GIL look alike
            return
        else:
            # Waiting for the GIL: the one this sampler took from it while it ran Python, or one
            # other threads held while they computed.
            kind = "gil" if _others_computed(last, now) else "cpu"
        if kind != "wait" and self.stacks is not None and time.perf_counter() >= self.stacks.due:
            # The loop-stacks timer came due during this look, and its handler has not run: the
            # alarm woke a waiting loop, which now waits for the GIL this sampler holds — as a
            # computing one would. Neither kind can be told: the look counts for none.
            self.alarm_ticks += 1
            return
        if kind == "gil":
            self.gil_ticks += 1
        frame = enclosing_frame(frames)
        key = (frame.function, frame.file, frame.line, self._route())
        counts = self.counts.setdefault(key, [0, 0, 0, 0])
        counts[KINDS.index(kind)] += 1
        counts[3] += gil_free

    def _starved_of_gil(self) -> bool:
        """In the GIL's futex now (asleep, not stopped by a profiler)."""
        if not self.gil_futexes or self._files.state() not in ("S", "D"):
            return False
        futex = self._files.futex()
        return futex is not None and self._is_gil(futex)

    def _loop_cpu_ns(self) -> int:
        """The loop thread's CPU time: its CPU-time clock (``clock_gettime``, no ``/proc`` read)."""
        return time.clock_gettime_ns(self._loop_clock)

    def _is_gil(self, address: str) -> bool:
        # The GIL's mutex and condition variables sit together in one structure: a wait on any
        # of them is a wait for the GIL, whichever the calibration happened to see.
        at = int(address, 16)
        return any(abs(at - int(g, 16)) <= GIL_STRUCT_BYTES for g in self.gil_futexes)

    def _still_running(self) -> bool:
        # A loop computing Python hands the GIL over when this sampler asks for it, and is still
        # "R" for a moment on its way into the GIL's futex — longer on a busy machine, where it
        # waits for a core to get there. One in C without the GIL keeps running. So look again a
        # little later, after sleeping with the GIL held (``usleep`` through PyDLL, which frees
        # this core for the loop to get where it is going): running in user space then ("running",
        # or preempted outside any system call, "-1") is C without the GIL; anything else — in
        # the GIL's futex, woken there but not yet on a CPU — is not.
        if _USLEEP is not None:
            _USLEEP(int(RECHECK_S * 1e6))
        if self._files.state() != "R":
            return False
        return self._files.read("syscall").split(maxsplit=1)[:1] in ([b"running"], [b"-1"])

    def _route(self) -> str | None:
        if self._route_for_task is None:
            return None
        try:
            task = asyncio.current_task(self.loop)
        except RuntimeError:
            return None
        return self._route_for_task(task) if task is not None else None

    def snapshot(self) -> dict[str, Any]:
        samples = [
            {"function": k[0], "file": k[1], "line": k[2], "route": k[3], "cpu": c[0], "wait": c[1], "gil": c[2],
             "cpu_gil_free": c[3]}
            for k, c in sorted(self.counts.items(), key=lambda kv: -sum(kv[1][:3]))
        ]  # fmt: skip
        return {
            "pid": os.getpid(),  # with several worker processes, each answers for its own loop
            "hz": round(1.0 / self.interval_s, 1),
            "ticks": self.ticks,
            "outside_app": self.outside_app,
            "gil_ticks": self.gil_ticks,
            "alarm_ticks": self.alarm_ticks,
            "samples": samples,
        }


_RUNNER_NAMES = frozenset({"run", "run_forever", "run_until_complete"})


def _is_runner(code: CodeType) -> bool:
    """asyncio's own ``run*`` frames: where control goes into the event loop."""
    return code.co_name in _RUNNER_NAMES and code.co_filename.startswith(_ASYNCIO_DIR)


def _line_at(code: CodeType, offset: int) -> int:
    """The source line of the instruction at byte ``offset`` of ``code`` (what ``f_lineno`` says
    of a frame stopped there)."""
    for start, end, line in code.co_lines():
        if start <= offset < end:
            return line if line is not None else code.co_firstlineno
    return code.co_firstlineno


class LoopStacks:
    """The loop thread's whole stack ``hz`` times a second, exact, for the profile: what py-spy
    would record of the loop, without pausing the server (:mod:`loadlab.recording`).

    A wall-clock timer (``setitimer(ITIMER_REAL)``) sends the process SIGALRM; Linux gives a signal
    sent to the process to its main thread, the loop's, and interrupts whatever system call it is
    in (a sleep, ``epoll``, a lock). Python then runs the handler in that thread at the next
    bytecode, and hands it the frame it was running: the loop's stack where it was, not where it
    would next let go of the GIL (a thread that asks for the GIL sees a loop that does many short
    things between two waits only ever in its wait). C code that keeps the GIL delays the handler
    until it returns to Python; several alarms meanwhile become one, so each look counts the time
    since the previous one (in intervals), and the caller of that C code gets all of it — as it
    would from py-spy, which shows no C frames without ``--native``.

    Used only when the harness asks for it (``LOADLAB_LOOP_STACKS_HZ``), on a loop that runs in the
    main thread, in an app that has no SIGALRM handler or timer of its own; ``SA_RESTART`` is set,
    so system calls that can resume after a signal do.
    """

    def __init__(self, hz: float) -> None:
        self.interval_s = 1.0 / hz
        # (id of the code, instruction offset) pairs from the innermost frame out -> the intervals
        # the looks stand for. Not the code objects and f_lineno: a code object is hashed anew each
        # time (its bytes, names and constants), and f_lineno decodes the line table: together about
        # half of a look on an idle asyncio loop.
        self.stacks: dict[tuple[tuple[int, int], ...], float] = {}
        self._codes: dict[int, CodeType] = {}  # by id, held: an id stays that code's while recorded
        self._runners: dict[int, bool] = {}  # by id: asyncio's run* frames
        self.native_tid = threading.get_native_id()
        self.thread_name = threading.current_thread().name
        self.looks = 0
        self.unavailable: str | None = None  # why it did not start
        self._first: float | None = None
        self._last: float | None = None
        self._previous: Any = None
        self._running = False
        self._entries: dict[int, int] = {}  # by id, each code's RESUME: a frame there has not begun
        self.due = math.inf  # when the next alarm comes due (perf_counter), while the timer runs

    def start(self) -> bool:
        """Arm the timer (from the loop's thread); False, with :attr:`unavailable` set, if it cannot."""
        if threading.current_thread() is not threading.main_thread():
            self.unavailable = "the event loop does not run in the main thread, where Python runs signal handlers"
        elif signal.getsignal(signal.SIGALRM) != signal.SIG_DFL or signal.getitimer(signal.ITIMER_REAL)[0]:
            # (None: a handler installed from C, by a library: not ours to take either)
            self.unavailable = "the app has its own SIGALRM handler or timer"
        if self.unavailable is not None:
            return False
        self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
        signal.siginterrupt(signal.SIGALRM, False)
        self._running = True
        self._arm(self.interval_s)
        # A server that exits without its lifespan's shutdown: disarmed before Python gives SIGALRM
        # its default action back (which would end the process by the signal, not its own exit).
        atexit.register(self.stop)
        return True

    def stop(self) -> None:
        """Disarm the timer, then give SIGALRM back (from the loop's thread; re-entrant)."""
        if not self._running:
            return
        self._running = False
        self.due = math.inf
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        atexit.unregister(self.stop)
        if signal.getsignal(signal.SIGALRM) == self._on_alarm:
            signal.signal(signal.SIGALRM, self._previous if self._previous is not None else signal.SIG_DFL)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if not self._running:
            return  # one that was pending when the timer was disarmed: not re-armed
        now = time.perf_counter()
        # The next alarm a little earlier or later: a period equal to something the loop does
        # periodically (the lag probe's 10 ms) would otherwise see it in the same phase every time.
        self._arm(self.interval_s * random.uniform(0.5, 1.5))
        last, self._last = self._last, now
        if self._first is None:
            self._first = now
        weight = 1.0 if last is None else (now - last) / self.interval_s
        if frame is None:
            return  # no Python frame at all: nothing to count it for
        if frame.f_back is not None and self._at_entry(frame) and self._is_runner(frame.f_back.f_code):
            # A callback a C loop (uvloop) calls, not yet begun: the alarm came while the loop was
            # in C (waiting, or its own work), and the callback is where Python next ran. py-spy
            # shows the runner then too.
            frame = frame.f_back
        key = []
        codes = self._codes
        while frame is not None:
            code = frame.f_code
            if id(code) not in codes:
                codes[id(code)] = code
            key.append((id(code), frame.f_lasti))
            frame = frame.f_back
        stack = tuple(key)
        self.stacks[stack] = self.stacks.get(stack, 0.0) + weight
        self.looks += 1

    def _arm(self, delay_s: float) -> None:
        # Due a little before the kernel's expiry (read before it is set): never after it.
        self.due = time.perf_counter() + delay_s
        signal.setitimer(signal.ITIMER_REAL, delay_s, self.interval_s)

    def _is_runner(self, code: CodeType) -> bool:
        runner = self._runners.get(id(code))
        if runner is None:
            self._codes[id(code)] = code
            runner = self._runners[id(code)] = _is_runner(code)
        return runner

    def _at_entry(self, frame: FrameType) -> bool:
        code = frame.f_code
        entry = self._entries.get(id(code))
        if entry is None:
            self._codes[id(code)] = code
            resume = (i.offset for i in dis.get_instructions(code) if i.opname == "RESUME")
            entry = self._entries[id(code)] = next(resume, 0)
        return frame.f_lasti <= entry

    def snapshot(self) -> dict[str, Any]:
        """The stacks in py-spy's raw (folded) form, outermost frame first, each ``function
        (file:line)``; counts in samples at ``hz`` (the weights, rounded)."""
        folded: dict[str, float] = {}
        frames: dict[tuple[int, int], str] = {}
        # The stacks before the codes: the handler may add both in between (a signal lands between
        # any two bytecodes), and every code of a stack is in _codes before the stack is.
        stacks = list(self.stacks.items())
        codes = dict(self._codes)
        for stack, weight in stacks:
            names = []
            for where in reversed(stack):
                name = frames.get(where)
                if name is None:
                    code = codes[where[0]]
                    name = frames[where] = f"{code.co_qualname} ({code.co_filename}:{_line_at(code, where[1])})"
                names.append(name)
            text = ";".join(names)
            folded[text] = folded.get(text, 0.0) + weight
        span = (self._last - self._first) if self._first is not None and self._last is not None else 0.0
        return {
            "pid": os.getpid(),
            "native_tid": self.native_tid,
            "thread_name": self.thread_name,
            "hz": round(1.0 / self.interval_s, 1),
            "looks": self.looks,
            "seconds": round(span, 3),
            "unavailable": self.unavailable,
            "stacks": [[text, max(1, round(w))] for text, w in sorted(folded.items(), key=lambda kv: -kv[1])],
        }


class _GcTracker:
    """Which threads are inside a garbage collection right now (``gc.callbacks`` run in the thread
    that collects), so a stall caused by a full collection of a large heap is named as such."""

    def __init__(self) -> None:
        self.collecting: dict[int, int] = {}
        self._installed = False

    def install(self) -> None:
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.collecting[threading.get_ident()] = info.get("generation", -1)
        else:
            self.collecting.pop(threading.get_ident(), None)


_GC = _GcTracker()


class StallWatchdog:
    """A daemon thread that catches the event loop blocked, and names the function blocking it.

    Every ``poll`` seconds it compares the probe's heartbeat with the clock. When the loop has not
    beaten for ``stall_ms``, the loop thread is still inside the culprit, so its stack (from
    ``sys._current_frames()``) names it: the innermost application frame, plus the route being
    served. The stall's ``duration_ms`` is the whole gap between two heartbeats, recorded once the
    loop beats again (so it is an upper bound of the blocking call by at most one interval).
    """

    def __init__(
        self,
        probe: LoopLagProbe,
        loop: asyncio.AbstractEventLoop,
        loop_thread_id: int,
        stall_ms: float = DEFAULT_STALL_MS,
        loop_native_tid: int | None = None,
        route_for_task: Callable[[asyncio.Future[Any]], str | None] | None = None,
        route_for_code: Callable[[CodeType], str | None] | None = None,
        on_stall: Callable[[Stall], None] | None = None,
    ) -> None:
        self.probe = probe
        self.loop = loop
        self.loop_thread_id = loop_thread_id
        self.loop_native_tid = loop_native_tid
        self.stall_s = stall_ms / 1000.0
        self.poll_s = min(0.010, self.stall_s / 4)
        self._route_for_task = route_for_task
        self._route_for_code = route_for_code
        self._on_stall = on_stall
        # Called at each wake-up, after the stall check: the loop sampler, when it rides this thread
        # (LoopSampler.ride). Set before the thread starts, or appended while it runs.
        self.passengers: list[Callable[[], None]] = []
        self.stalls: deque[Stall] = deque(maxlen=MAX_STALLS)
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadlab-stall-watchdog", daemon=True)

    def start(self) -> None:
        _GC.install()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _capture(self) -> tuple[list[FrameInfo], str | None]:
        frame = sys._current_frames().get(self.loop_thread_id)
        frames = application_frames(frame)
        collecting = _GC.collecting.get(self.loop_thread_id)
        if collecting is not None:
            # The interpreter's own garbage collector holds the loop, not the frame it interrupted.
            frames.insert(0, FrameInfo(f"(garbage collection, generation {collecting})", "<gc>", 0))
        route: str | None = None
        if self._route_for_task is not None:
            try:
                task = asyncio.current_task(self.loop)
            except RuntimeError:
                task = None
            if task is not None:
                route = self._route_for_task(task)
        if route is None and self._route_for_code is not None:
            while frame is not None and route is None:
                route = self._route_for_code(frame.f_code)
                frame = frame.f_back
        return frames, route

    def _cpu_ns(self) -> int | None:
        return thread_cpu_ns(self.loop_native_tid) if self.loop_native_tid is not None else None

    def _run(self) -> None:
        captured: tuple[list[FrameInfo], str | None] | None = None
        stalled_since = 0.0
        cpu_start: tuple[float, int | None] = (0.0, None)
        while True:  # time.sleep, not Event.wait: 2 of 6 frames fewer for py-spy to read, 100 times a second
            time.sleep(self.poll_s)
            if self._stop.is_set():
                break
            beat = self.probe.last_beat
            gap = time.monotonic() - beat
            if captured is None:
                if gap >= self.stall_s:
                    captured = self._capture()
                    stalled_since = beat
                    cpu_start = (time.monotonic(), self._cpu_ns())
            elif beat != stalled_since:
                self._finish(captured, beat, stalled_since, cpu_start)
                captured = None
            for passenger in self.passengers:
                passenger()
        # Stopped right after the loop resumed (a test ending on its blocking call): the stall was
        # caught in the act and has ended, so record it rather than lose it.
        beat = self.probe.last_beat
        if captured is not None and beat != stalled_since:
            self._finish(captured, beat, stalled_since, cpu_start)

    def _finish(
        self,
        captured: tuple[list[FrameInfo], str | None],
        beat: float,
        stalled_since: float,
        cpu_start: tuple[float, int | None],
    ) -> None:
        # How much of the stall (from its detection on) the loop thread spent on a CPU.
        cpu_share = None
        cpu_end, wall = self._cpu_ns(), time.monotonic() - cpu_start[0]
        if cpu_start[1] is not None and cpu_end is not None and wall >= 0.02:
            cpu_share = min(1.0, (cpu_end - cpu_start[1]) / 1e9 / wall)
        self._record(captured, duration_s=beat - stalled_since, since=stalled_since, cpu_share=cpu_share)

    def _record(
        self,
        captured: tuple[list[FrameInfo], str | None],
        duration_s: float,
        since: float,
        cpu_share: float | None = None,
    ) -> None:
        frames, route = captured
        culprit = enclosing_frame(frames) if frames else None
        kind = "unknown" if cpu_share is None else ("cpu" if cpu_share > CPU_SHARE_FOR_CPU else "wait")
        stall = Stall(
            started_at=round(time.time() - (time.monotonic() - since), 3),
            duration_ms=round(duration_s * 1000, 1),
            function=culprit.function if culprit else None,
            file=culprit.file if culprit else None,
            line=culprit.line if culprit else None,
            route=route,
            stack=[str(f) for f in frames],
            cpu_share=None if cpu_share is None else round(cpu_share, 3),
            kind=kind,
        )
        self.stalls.appendleft(stall)
        self.total += 1
        if self._on_stall is not None:
            self._on_stall(stall)

    def recent(self) -> list[dict[str, Any]]:
        """The last stalls, newest first."""
        return [s.to_dict() for s in list(self.stalls)]


class _GaugeCollector(Collector):
    """Reads the live state at scrape time, so nothing is stored twice."""

    def __init__(self, instrumentation: Instrumentation) -> None:
        self._inst = instrumentation

    def describe(self) -> list[Metric]:
        return []  # the values can only be read on the event loop, not at registration

    def collect(self) -> Iterator[Metric]:
        pool = self._inst.threadpool.snapshot()
        for name, key, doc in (
            ("loadlab_threadpool_borrowed_tokens", "borrowed", "AnyIO worker threads in use"),
            ("loadlab_threadpool_total_tokens", "total", "AnyIO default limiter size"),
            ("loadlab_threadpool_waiting_tasks", "waiting", "Tasks waiting for a worker thread"),
        ):
            yield GaugeMetricFamily(name, doc, value=pool[key])
        inflight = GaugeMetricFamily("loadlab_inflight_requests", "Requests in flight", labels=["route"])
        for route, n in self._inst.inflight.snapshot()["by_route"].items():
            inflight.add_metric([route], n)
        yield inflight
        watchdog = self._inst.watchdog
        yield CounterMetricFamily(
            "loadlab_loop_stalls",
            "Event-loop stalls longer than the threshold",
            value=watchdog.total if watchdog else 0,
        )


class Instrumentation:
    """Everything loadlab watches inside one server process. Start it on the event loop."""

    def __init__(self, stall_ms: float = DEFAULT_STALL_MS, sample_hz: float = 0.0, stacks_hz: float = 0.0) -> None:
        self.stall_ms = stall_ms
        self.sample_hz = sample_hz
        self.stacks_hz = stacks_hz
        self.sampler: LoopSampler | None = None
        self.stacks: LoopStacks | None = None
        self.probe = LoopLagProbe()
        self.threadpool = ThreadpoolGauge()
        self.inflight = InflightTracker()
        self.watchdog: StallWatchdog | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        self.probe.histogram = Histogram(
            "loadlab_loop_lag_seconds",
            "How late the event loop ran a 10 ms timer",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=self.registry,
        )
        self._stall_hist = Histogram(
            "loadlab_loop_stall_seconds",
            "Duration of event-loop stalls",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.registry.register(_GaugeCollector(self))
        self._task: asyncio.Task[None] | None = None
        # Tasks a request spawned (weakly held: they may outlive nothing of ours).
        self._spawned: weakref.WeakKeyDictionary[asyncio.Future[Any], Scope] = weakref.WeakKeyDictionary()
        self._previous_factory: Any = None
        self._code_routes: dict[CodeType, str] = {}
        self._started_at = time.monotonic()

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self, app: Any = None) -> None:
        """Start the probe and the watchdog on the running loop (idempotent)."""
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._code_routes = _endpoint_codes(app)
        self.inflight.resolve = route_resolver(app, self._code_routes)
        self._previous_factory = loop.get_task_factory()
        loop.set_task_factory(self._task_factory)
        self._task = loop.create_task(self.probe.run(), name="loadlab-loop-lag-probe")
        self.watchdog = StallWatchdog(
            self.probe,
            loop,
            threading.get_ident(),
            self.stall_ms,
            loop_native_tid=threading.get_native_id(),
            route_for_task=self._route_for_task,
            route_for_code=self._code_routes.get,
            on_stall=lambda s: self._stall_hist.observe(s.duration_ms / 1000),
        )
        self.watchdog.start()
        if self.sample_hz > 0 and _FUTEX is not None:
            try:
                self.sampler = LoopSampler(
                    loop, threading.get_ident(), threading.get_native_id(), self.sample_hz, self._route_for_task
                )
            except OSError:
                # No per-thread /proc files here (a sandboxed kernel): the analysis falls back on
                # the stall watchdog, and the app starts as it would have.
                self.sampler = None
            else:
                if not self.sampler.ride(self.watchdog):
                    self.sampler.start()
        if self.stacks_hz > 0:
            self.stacks = LoopStacks(self.stacks_hz)
            if self.stacks.start() and self.sampler is not None:
                self.sampler.stacks = self.stacks

    def own_threads(self) -> list[int]:
        """The native ids of the loop's thread and of loadlab's own threads in this process: a
        recorder that starts py-spy only once another thread runs (:class:`loadlab.recording.ThreadWatch`)
        leaves these out."""
        threads = [self.watchdog._thread if self.watchdog else None, self.sampler._thread if self.sampler else None]
        own = {t.native_id or 0 for t in threads if t is not None}
        if self.watchdog is not None:
            own.add(self.watchdog.loop_native_tid or 0)
        return sorted(own - {0})

    async def stop(self) -> None:
        if self.stacks is not None:
            self.stacks.stop()
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.sampler is not None:
            self.sampler.stop()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
            asyncio.get_running_loop().set_task_factory(self._previous_factory)

    def _task_factory(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        # Tasks a request spawns (a streaming body, a task group) inherit its context: remember
        # their request, so a stall inside one still names the route.
        previous = self._previous_factory
        task = previous(loop, coro, **kwargs) if previous else asyncio.Task(coro, loop=loop, **kwargs)
        scope = _REQUEST_SCOPE.get(None)
        if scope is not None:
            self._spawned[task] = scope
        return task

    def request_started(self, scope: Scope) -> tuple[object, contextvars.Token[Scope | None]]:
        # On every request: keep it to a dict insert and a context variable (no weak references).
        key = asyncio.current_task() or object()
        self.inflight.enter(key, scope)
        return key, _REQUEST_SCOPE.set(scope)

    def request_finished(self, started: tuple[object, contextvars.Token[Scope | None]]) -> None:
        key, token = started
        _REQUEST_SCOPE.reset(token)
        self.inflight.exit(key)

    def _route_for_task(self, task: asyncio.Future[Any]) -> str | None:
        scope = self.inflight.by_task.get(task) or self._spawned.get(task)
        return route_of(scope, self.inflight.resolve) if scope is not None else None

    def loop_snapshot(self, window_s: float | None = None) -> dict[str, Any]:
        return {
            "time": round(time.time(), 3),
            "lag_ms": self.probe.snapshot(window_s),
            "threadpool": self.threadpool.snapshot(),
            "inflight": self.inflight.snapshot(),
            "stalls_total": self.watchdog.total if self.watchdog else 0,
            "stall_ms": self.stall_ms,
            "uptime_s": round(time.monotonic() - self._started_at, 3),
            "pid": os.getpid(),
        }

    def metrics_text(self) -> bytes:
        return generate_latest(self.registry)


def _endpoint_codes(app: Any) -> dict[CodeType, str]:
    """Map each route endpoint's code object to its path, for apps with Starlette-style routes.

    The watchdog uses it when the blocked task is not the request's own task, and the harness
    (``/debug/routes``) to map profile frames to routes without importing the app.
    """
    out: dict[CodeType, str] = {}
    for route, path in _routes_with_paths(app):
        code = getattr(inspect.unwrap(getattr(route, "endpoint", None) or (lambda: None)), "__code__", None)
        if isinstance(code, CodeType) and code.co_name != "<lambda>":
            out.setdefault(code, path)
    for endpoint, path in _framework_endpoints(app):
        code = _code_of(getattr(endpoint, "func", endpoint))  # Litestar's AsyncCallable keeps the function in .func
        if code is not None and is_application_file(code.co_filename):
            out.setdefault(code, path)
    return out


def _framework_app(app: Any) -> tuple[str, Any] | None:
    """Which of the routers loadlab knows besides Starlette's the app is (under its middleware):
    ``("django", handler)``, ``("litestar", app)``, ``("quart", app)``, ``("falcon", app)``."""
    seen: set[int] = set()
    node = app
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        module = type(node).__module__.split(".")[0]
        if module in ("django", "litestar", "quart", "falcon"):
            return module, node
        node = getattr(node, "app", None)  # unwrap middleware
    return None


def _framework_endpoints(app: Any) -> list[tuple[Any, str]]:
    """Each view of a Django, Litestar, Quart or Falcon app with its route template, read from
    the framework's own router; nothing for other apps, or when the router cannot be read."""
    found = _framework_app(app)
    if found is None:
        return []
    kind, node = found
    out: list[tuple[Any, str]] = []
    try:
        if kind == "django":
            from django.urls import URLPattern, URLResolver, get_resolver

            def walk(patterns: Any, prefix: str, depth: int) -> None:
                for p in patterns if depth < 8 else []:
                    route = prefix + str(p.pattern)
                    if isinstance(p, URLResolver):
                        walk(p.url_patterns, route, depth + 1)
                    elif isinstance(p, URLPattern):
                        out.append((p.callback, "/" + route))
                        # A class-based view: as_view()'s function is Django's; the handlers
                        # (get, post…) on the class are the app's code for this route.
                        view_class = getattr(p.callback, "view_class", None)
                        for method in getattr(view_class, "http_method_names", None) or []:
                            handler = getattr(view_class, method, None)
                            if handler is not None:
                                out.append((handler, "/" + route))

            walk(get_resolver().url_patterns, "", 0)
        elif kind == "litestar":
            for route in node.routes:
                for handler in getattr(route, "route_handlers", None) or []:
                    out.append((handler.fn, route.path))
        elif kind == "quart":
            for rule in node.url_map.iter_rules():
                view = node.view_functions.get(rule.endpoint)
                if view is not None:
                    out.append((view, rule.rule))
        elif kind == "falcon":
            nodes = list(node._router._roots)  # no public listing with the responders themselves
            while nodes:
                n = nodes.pop()
                nodes.extend(n.children)
                if n.resource is not None:
                    out.extend((responder, n.uri_template) for responder in (n.method_map or {}).values())
    except Exception:  # an app's router must never break the harness
        return []
    return out


def route_resolver(app: Any, code_routes: dict[CodeType, str] | None = None) -> RouteResolver | None:
    """The request's route template, found through the app's own router, for the routers that do
    not leave it in the scope: Starlette's (the endpoint it put in the scope, by ``code_routes``),
    Django's URL resolver, Quart's URL map, Falcon's router. None for other apps."""
    found = _framework_app(app)
    kind, node = found if found is not None else ("", app)
    routes = code_routes or {}

    @functools.lru_cache(maxsize=1024)
    def by_path(path: str, method: str) -> str | None:
        if kind == "django":
            from django.urls import Resolver404, resolve

            try:
                return "/" + str(resolve(path).route)
            except Resolver404:
                return None
        if kind == "quart":
            rule, _ = node.url_map.bind("localhost").match(path, method=method, return_rule=True)
            return str(rule.rule)
        if kind == "falcon":
            match = node._router.find(path)
            return str(match[3]) if match else None
        return None

    def resolve(scope: Scope) -> str | None:
        code = _code_of(scope.get("endpoint"))  # Starlette's router leaves the endpoint in the scope
        if code is not None and code in routes:
            return routes[code]
        return by_path(str(scope.get("path", "")), str(scope.get("method", "GET")))

    return resolve if kind in ("django", "quart", "falcon") or routes else None


def _routes_with_paths(app: Any) -> list[tuple[Any, str]]:
    """Every route object with its full path, for apps with Starlette-style routes. Routers are
    walked by duck typing: plain routes, mounts, and FastAPI's included-router wrappers; the
    middleware around the app is unwrapped first."""
    seen: set[int] = set()
    while app is not None and getattr(app, "routes", None) is None and id(app) not in seen:
        seen.add(id(app))
        app = getattr(app, "app", None)  # unwrap middleware
    out: list[tuple[Any, str]] = []

    def walk(routes: Any, prefix: str, depth: int) -> None:
        if depth > 8:
            return
        for route in routes:
            path = getattr(route, "path", None)
            if isinstance(path, str):
                out.append((route, prefix + path))
            candidates = getattr(route, "effective_candidates", None)  # FastAPI >= 0.16x include_router
            if callable(candidates):
                candidates = candidates()
            if candidates:
                walk(candidates, prefix, depth + 1)
            sub = getattr(route, "routes", None)  # Mount, Router
            if sub and sub is not routes:
                walk(sub, prefix + (path or ""), depth + 1)

    walk(getattr(app, "routes", None) or [], "", 0)
    return out


def _code_of(obj: Any) -> CodeType | None:
    """The code object behind a function, a bound method or a callable instance, if any."""
    target = inspect.unwrap(obj) if callable(obj) else obj
    code = getattr(target, "__code__", None)
    if code is None and not inspect.isroutine(target):
        code = getattr(getattr(type(target), "__call__", None), "__code__", None)  # noqa: B004 - the method's code
    return code if isinstance(code, CodeType) else None


def _dependency_calls(dependant: Any, depth: int = 0) -> Iterator[Any]:
    """Every callable a FastAPI route depends on, sub-dependencies included."""
    if depth > 16:
        return
    for sub in getattr(dependant, "dependencies", None) or []:
        call = getattr(sub, "call", None)
        if call is not None:
            yield call
        yield from _dependency_calls(sub, depth + 1)


def _middleware_codes(app: Any) -> list[CodeType]:
    """The code a request runs through in the app's middleware: a pure ASGI middleware's
    ``__call__``, a ``BaseHTTPMiddleware``'s ``dispatch`` (or the function given to
    ``@app.middleware("http")``), and ASGI wrappers put around the app by hand."""
    out: list[CodeType] = []
    seen: set[int] = set()
    node = app
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        for m in getattr(node, "user_middleware", None) or []:
            cls, kwargs = getattr(m, "cls", None), getattr(m, "kwargs", None) or {}
            dispatch = kwargs.get("dispatch") if isinstance(kwargs, dict) else None
            target = dispatch or getattr(cls, "dispatch", None) or getattr(cls, "__call__", None)  # noqa: B004
            code = getattr(target, "__code__", None)
            if isinstance(code, CodeType):
                out.append(code)
        if getattr(node, "routes", None) is None and getattr(node, "app", None) is not None:
            # A wrapper around the app (``app = Timer(FastAPI())``); loadlab's own is not app code.
            code = getattr(getattr(type(node), "__call__", None), "__code__", None)  # noqa: B004
            if isinstance(code, CodeType):
                out.append(code)
        node = getattr(node, "app", None)
    return list(dict.fromkeys(out))  # a wrapper that forwards attributes lists the same ones again


def _describe(code: CodeType) -> dict[str, Any]:
    return {"function": code.co_qualname, "file": code.co_filename, "line": code.co_firstlineno}


def _app_packages(app: Any) -> list[str]:
    """The top-level package of each layer of the app, outermost first (``app = Timer(FastAPI())``:
    the user's module, then ``fastapi``): which framework serves it, even when its own code is
    too quick for any sample to catch."""
    out: list[str] = []
    node, seen = app, 0
    while node is not None and seen < 16:
        out.append(type(node).__module__.split(".", 1)[0])
        node, seen = getattr(node, "app", None), seen + 1
    return list(dict.fromkeys(out))


def app_map(app: Any) -> dict[str, Any]:
    """Where each piece of the app's code sits, for ``/debug/routes``: route endpoints, the
    dependencies of each route (from FastAPI's dependency graph), and the middleware every
    request passes. Only application code is listed; the harness maps profile frames with it."""
    routes = [{"path": path, **_describe(code)} for code, path in _endpoint_codes(app).items()]
    deps: dict[CodeType, set[str]] = {}
    for route, path in _routes_with_paths(app):
        for call in _dependency_calls(getattr(route, "dependant", None)):
            code = _code_of(call)
            if code is not None and is_application_file(code.co_filename):
                deps.setdefault(code, set()).add(path)
    return {
        "routes": sorted(routes, key=lambda r: str(r["path"])),
        "dependencies": sorted(
            ({**_describe(c), "routes": sorted(paths)} for c, paths in deps.items()), key=lambda d: d["function"]
        ),
        "middleware": [_describe(c) for c in _middleware_codes(app) if is_application_file(c.co_filename)],
        "packages": _app_packages(app),
    }


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DebugResponse = tuple[int, bytes, bytes]  # status, content type, body


def parse_debug_allow(raw: str | None) -> tuple[IPNetwork, ...]:
    """The networks ``LOADLAB_DEBUG_ALLOW`` (comma-separated CIDRs) lets read the debug endpoints,
    besides loopback. Unset or blank: none. A bad entry raises a one-line :class:`ValueError`."""
    networks: list[IPNetwork] = []
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError:
            hint = ""
            with contextlib.suppress(ValueError):
                hint = f" (host bits set: did you mean {ipaddress.ip_network(item, strict=False)}?)"
            raise ValueError(
                f"{DEBUG_ALLOW_ENV} must be a comma-separated list of IP networks in CIDR form, "
                f"like 10.0.0.0/8,192.168.1.5/32; got {item!r}{hint}"
            ) from None
    return tuple(networks)


def debug_client_allowed(client: Any, allow: tuple[IPNetwork, ...] = ()) -> bool:
    """May the ASGI ``client`` (``scope["client"]``) read the debug endpoints?

    Loopback (127.0.0.0/8, ::1, and 127.x seen through an IPv4-mapped IPv6 socket) may, and so may
    the ``allow`` networks. No client at all (a Unix socket, some test transports) counts as local;
    a client that is not an IP address (``"testclient"``) may not.
    """
    if not client:
        return True
    try:
        ip = ipaddress.ip_address(str(client[0]))
    except (ValueError, TypeError, IndexError, KeyError):
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or any(ip in network for network in allow)


class InstrumentedApp:
    """An ASGI wrapper that adds loadlab's instrumentation and debug endpoints to any ASGI app.

    The debug endpoints live under ``prefix`` (``""`` for the target app, which owns its URL space;
    a prefix that cannot clash, such as ``/__loadlab__``, for a user's app). Only loopback clients
    and the networks in ``LOADLAB_DEBUG_ALLOW`` (read here, once) reach them; for anyone else the
    request goes on to the wrapped app, which answers its own 404.
    """

    def __init__(self, app: ASGIApp, stall_ms: float = DEFAULT_STALL_MS, prefix: str = "") -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.instrumentation = Instrumentation(
            stall_ms=stall_ms, sample_hz=loop_sample_hz(), stacks_hz=loop_sample_hz(LOOP_STACKS_ENV)
        )
        self.debug_allow = parse_debug_allow(os.environ.get(DEBUG_ALLOW_ENV))
        self._routes: dict[str, Callable[[Scope], DebugResponse]] = {
            f"{self.prefix}/metrics": self._metrics,
            f"{self.prefix}/debug/loop": self._debug_loop,
            f"{self.prefix}/debug/stalls": self._debug_stalls,
            f"{self.prefix}/debug/routes": self._debug_routes,
            f"{self.prefix}/debug/samples": self._debug_samples,
            f"{self.prefix}/debug/stacks": self._debug_stacks,
        }

    def _metrics(self, scope: Scope) -> DebugResponse:
        return 200, b"text/plain; version=0.0.4; charset=utf-8", self.instrumentation.metrics_text()

    def _debug_loop(self, scope: Scope) -> DebugResponse:
        # ?window_s=1 gives the lag of the last second only (the harness polls it every second);
        # more than the probe's window is capped to it. NaN, inf, 0 or a word is a 400, not NaN.
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        window_s: float | None = None
        if "window_s" in query:
            raw = query["window_s"][0]
            try:
                window_s = float(raw)
            except ValueError:
                window_s = math.nan
            if not (math.isfinite(window_s) and window_s > 0):
                error = f"window_s must be a number of seconds > 0, e.g. 1; got {raw[:40]!r}"
                return _json({"error": error}, status=400)
        return _json(self.instrumentation.loop_snapshot(window_s))

    def _debug_routes(self, scope: Scope) -> DebugResponse:
        # Lets a profile's frames be mapped back to routes, dependencies and middleware without
        # importing the app.
        return _json(app_map(self.app))

    def _debug_samples(self, scope: Scope) -> DebugResponse:
        sampler = self.instrumentation.sampler
        return _json(sampler.snapshot() if sampler else {"hz": 0, "ticks": 0, "outside_app": 0, "samples": []})

    def _debug_stacks(self, scope: Scope) -> DebugResponse:
        stacks = self.instrumentation.stacks
        answer = stacks.snapshot() if stacks else {"pid": os.getpid(), "hz": 0, "stacks": []}
        return _json({**answer, "own_threads": self.instrumentation.own_threads()})

    def _debug_stalls(self, scope: Scope) -> DebugResponse:
        watchdog = self.instrumentation.watchdog
        return _json({"pid": os.getpid(), "stalls": watchdog.recent() if watchdog else []})

    def __getattr__(self, name: str) -> Any:
        # Let tools that inspect the app (e.g. ``app.routes``, ``app.openapi()``) see through us.
        if name == "app":
            raise AttributeError(name)
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        inst = self.instrumentation
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if not inst.started:  # the server may run with --lifespan off
            inst.start(self.app)
        if kind != "http":
            await self.app(scope, receive, send)
            return
        handler = self._routes.get(scope["path"])
        # Not for this client: on to the app, whose own 404 does not reveal the route exists.
        if handler is not None and debug_client_allowed(scope.get("client"), self.debug_allow):
            status, content_type, body = handler(scope)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", content_type), (b"cache-control", b"no-store")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        started = inst.request_started(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            inst.request_finished(started)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        inst = self.instrumentation

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                inst.start(self.app)
            elif message["type"] == "lifespan.shutdown":
                await inst.stop()
            return message

        return wrapped


def loop_sample_hz(variable: str = LOOP_SAMPLE_ENV) -> float:
    """``LOADLAB_LOOP_SAMPLE_HZ``: how often the loop sampler runs (0, the default: it does not);
    ``LOADLAB_LOOP_STACKS_HZ`` the same for :class:`LoopStacks`."""
    raw = os.environ.get(variable, "").strip()
    try:
        hz = float(raw) if raw else 0.0
    except ValueError:
        hz = math.nan
    if not (math.isfinite(hz) and 0 <= hz <= 400):
        raise ValueError(f"{variable} must be a number of samples per second from 0 to 400; got {raw!r}")
    return hz


def _json(data: Any, status: int = 200) -> DebugResponse:
    return status, b"application/json", json.dumps(data).encode()


def instrument(app: ASGIApp, stall_ms: float = DEFAULT_STALL_MS, prefix: str = "") -> InstrumentedApp:
    """Wrap ``app`` with the loop-lag probe, threadpool gauge, in-flight counter and stall watchdog."""
    return InstrumentedApp(app, stall_ms=stall_ms, prefix=prefix)
