"""py-spy on the server's child processes, each by its own recorder at a lower rate (issue 18).

``py-spy record --subprocesses`` samples every process of the tree at the loop's rate, in the
loop's mode, and looks for new children ten times a second. For a one-process server that is mostly
waste: a process pool's idle workers and multiprocessing's resource tracker were sampled 100 times
a second, pausing each, and cost as much py-spy CPU as the server itself
(``benchmarks/pyspy_cost.py``). So for such a server the main recorder samples the server's own
process only (exact, at ``--rate``), and :class:`ChildRecorders` attaches one ``py-spy record
--pid`` per child, found by polling the tree twice a second: ``--nonblocking`` (nothing there needs
an exact stack) at a tenth of the rate; by default (on demand) only once the child runs, so an idle
pool costs nothing. multiprocessing's resource tracker runs no app code, and gets none. At the end,
:meth:`ChildRecorders.merge_into` writes one ``profile.raw.txt`` as ``--subprocesses`` would have:
every line gets its ``process …`` prefix, and a child's counts are multiplied by the rate ratio, so
a count still means "this many of the main recorder's samples" and shares across processes stay
comparable.

The loop itself is not py-spy's to sample when the app runs loadlab's instrumentation (the
default): a pausing py-spy stops *every* thread of the server for each sample while it reads all
their frames, and that pause — not py-spy's CPU — is most of what profiling cost (up to a quarter of
the throughput with AnyIO's 40 threads busy). Instead the app samples its own loop
(:class:`loadlab.instrument.LoopStacks`): a wall-clock timer's SIGALRM interrupts the loop's thread
wherever it is, and Python hands loadlab's handler the frame it was running — exact, without
stopping anything else (a thread that merely waits for the GIL would see a busy loop only where it
next lets go, in its wait). py-spy records the server's process at a fifth of the rate without
pausing it (the threadpool view and the other threads need counts, not exactness), and at the end
:meth:`ChildRecorders.merge_into` puts the app's loop stacks (``/debug/stacks``) in place of
py-spy's own samples of the loop thread. :func:`loop_by_sampler` says when: not with ``--native``
(C frames need py-spy's pause), not without instrumentation.

Attaching by PID needs ptrace rights on processes the recorder did not start: root, or Yama's
``ptrace_scope`` 0. Elsewhere :func:`can_split` is False and the harness records the old way.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from loadlab.config import ProfileConfig
from loadlab.instrument import LOOP_STACKS_ENV
from loadlab.measure import loop_stacks, one_process
from loadlab.processes import PYSPY_STOP_LADDER, ManagedProcess, pyspy_argv

CHILD_RATE_DIVISOR = 10  # children are sampled at a tenth of the loop's rate
PROCESS_RATE_DIVISOR = 5  # with the loop sampled by the app: py-spy on the server at a fifth of it
LOOP_SAMPLER_MAX_HZ = 400  # the app's loop sampler's own bound (LOADLAB_LOOP_SAMPLE_HZ)
POLL_S = 0.5
# How often the server's threads are read until one other than the loop has run: each look wakes the
# watching thread, ~100 µs of CPU on this VM (0.2% of a core at 20 Hz), the reads ~20 µs more.
WATCH_S = 0.1
HELPER_MARK = "multiprocessing.resource_tracker"  # a child that is never recorded
MIN_AGE_S = 0.5  # a child younger than this may not have its interpreter up yet


def _in_thread(body: str, thread: str) -> bool:
    """Whether a py-spy line's stack (``body``) is one of ``thread``'s (``"thread (TID)"``)."""
    return body.startswith((thread + ";", thread + ":"))


def reached_rate(lines: list[str], thread: str, started: float | None, stopped: float | None, asked: int) -> float:
    """The rate a non-pausing py-spy reached on a process it recorded from ``started`` to
    ``stopped`` (``time.monotonic()``): its samples of the process's main thread (``thread``,
    ``"thread (TID)"``: with ``--idle`` in every sample) over that time; ``asked`` when the span is
    unknown or the count is implausible.

    py-spy draws each interval at random, from an exponential distribution (no aliasing with the
    app's own periods), so its count over a few seconds is a Poisson draw: at 20 Hz over 5 s,
    100 ± 10. Scaled by the rate asked for, a thread busy all along would read 10% more or less
    busy than it was; scaled by the rate reached, it reads as busy as it was."""
    if not started or not stopped or stopped <= started:
        return float(asked)
    samples = 0
    for line in lines:
        body, _, count = line.rpartition(" ")
        if count.isdigit() and _in_thread(body, thread):
            samples += int(count)
    reached = samples / (stopped - started)
    return reached if 0.5 * asked <= reached <= 1.5 * asked else float(asked)


def can_split() -> bool:
    """True when a recorder may attach to a process it did not start (root, or no Yama restriction)."""
    if os.geteuid() == 0:
        return True
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()) == 0
    except (OSError, ValueError):
        return True  # no Yama: classic ptrace rules (same user) apply


def split_recording(*, server: str, workers: int) -> bool:
    """Whether a server is recorded the split way: one uvicorn process whose loop is its own (with
    ``--workers N`` or gunicorn the loops are children, recorded with ``--subprocesses``). Also when
    py-spy attaches only once the load begins (``--expect-workers``, the agent): the children's
    recorders then start with it, and the app's loop stacks are cut to it."""
    return server == "uvicorn" and workers == 1 and can_split()


def loop_by_sampler(*, split: bool, instrument: bool, native: bool, asked: bool) -> bool:
    """Whether the loop's stacks come from the app's own loop sampler (exact, at ``--rate``) and
    py-spy records the rest of the server without pausing it, at a fifth of the rate: when asked
    (``--loop-by-app``, the default), one process's loop, instrumented, and not ``--native``."""
    return asked and split and instrument and not native


def process_rate(main_rate: int) -> int:
    return max(1, round(main_rate / PROCESS_RATE_DIVISOR))


@dataclass(frozen=True)
class Recording:
    """How one server is recorded, decided once: ``loadlab profile``, each test of ``loadlab ui``
    and the bench build their recorders from it."""

    rate: int  # --rate: the loop's, and the rate every merged count is expressed in
    split: bool  # children by recorders of their own (else one --subprocesses recorder)
    loop_by_app: bool  # the loop's stacks from the app's sampler; py-spy slower, not pausing
    native: bool = False
    nonblocking: bool = False
    # With the loop by the app: py-spy starts only once a thread other than the loop's and loadlab's
    # own has run (ThreadWatch); until then, and if none ever does, there is nothing for it to record.
    on_demand: bool = False

    @classmethod
    def of(cls, cfg: ProfileConfig) -> Recording:
        """The plan for a run of ``cfg``."""
        split = split_recording(server=cfg.server, workers=cfg.workers)
        by_app = loop_by_sampler(split=split, instrument=cfg.instrument, native=cfg.native, asked=cfg.loop_by_app)
        on_demand = by_app and cfg.pyspy_on_demand and not cfg.expect_workers
        return cls(cfg.rate, split, by_app, cfg.native, cfg.nonblocking, on_demand)

    @property
    def pyspy_rate(self) -> int:
        return process_rate(self.rate) if self.loop_by_app else self.rate

    def app_env(self) -> dict[str, str]:
        """What the server's environment needs for this recording."""
        return {LOOP_STACKS_ENV: str(min(self.rate, LOOP_SAMPLER_MAX_HZ))} if self.loop_by_app else {}

    def pyspy_argv(self, output: Path, pid: int | None = None) -> list[str]:
        """The main recorder: the server's process (its whole tree when not split)."""
        nonblocking = self.nonblocking or self.loop_by_app
        return pyspy_argv(
            output, rate=self.pyspy_rate, native=self.native, nonblocking=nonblocking, pid=pid,
            subprocesses=not self.split,
        )  # fmt: skip

    def child_recorders(self, output: Path, log_path: Path) -> ChildRecorders | None:
        if not self.split:
            return None
        process = self.pyspy_rate if self.loop_by_app else None
        return ChildRecorders(
            output, self.rate, log_path, native=self.native, process_rate=process, on_demand=self.on_demand
        )

    def describe(self) -> str:
        if self.loop_by_app:
            when = " once a thread besides the loop runs" if self.on_demand else ""
            return (
                f"the loop sampled in the app at {self.rate} Hz, py-spy at {self.pyspy_rate} Hz without "
                f"pausing it{when}"
            )
        return f"py-spy at {self.rate} Hz{' with --native' if self.native else ''}"


class ThreadClocks:
    """Each thread of process ``pid`` → its time on a CPU so far, in ns: the first field of
    ``/proc/PID/task/TID/schedstat`` (exact, where ``stat``'s clock ticks would miss a thread that
    woke for a few microseconds). Each file is opened once and re-read with ``pread``: opening seven
    files twenty times a second cost the watching process ~0.6% of a core, the re-reads a tenth of
    it. :meth:`read` raises OSError when the process is gone or its files cannot be read."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fds: dict[int, int] = {}

    def read(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for name in os.listdir(f"/proc/{self.pid}/task"):
            tid = int(name)
            try:
                fd = self._fds.get(tid)
                if fd is None:
                    fd = self._fds[tid] = os.open(f"/proc/{self.pid}/task/{name}/schedstat", os.O_RDONLY)
                out[tid] = int(os.pread(fd, 64, 0).split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue  # the thread ended meanwhile
            except (ValueError, IndexError) as exc:
                raise OSError(f"unreadable schedstat of thread {name}") from exc
        for tid in set(self._fds) - set(out):  # ended threads: their ids may come back as new ones
            os.close(self._fds.pop(tid))
        return out

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class ThreadWatch:
    """Calls ``start`` (py-spy's attach) the first time a thread of the server other than
    ``ignore`` (the loop's and loadlab's own, from the app's ``/debug/stacks``) runs at all: a
    thread that appears, or one whose time on a CPU grows. While only the loop runs, the app's
    own sampler has all there is to record, and a py-spy reading the idle threads' frames 20 times
    a second would cost the server ~3% of a core for nothing (issue 18). The threads are read every
    ``WATCH_S`` from this process, not the server's; py-spy attaches in ~50 ms, so a thread's first
    0.05–0.15 s of work goes unrecorded. Where the threads cannot be read, ``start`` is called at once.

    The thread that calls ``start`` outlives what it started until :meth:`stop` (a child's
    parent-death signal follows the thread that forked it): stop py-spy first, then this."""

    def __init__(self, pid: int, ignore: frozenset[int], start: Callable[[], object], every_s: float = WATCH_S) -> None:
        self.pid = pid
        self.ignore = ignore
        self._start = start
        self.every_s = every_s
        self.began: float | None = None  # time.monotonic() when the watch began
        self.fired: float | None = None  # when ``start`` was called
        self.thread_id: int | None = None  # the thread seen running (None: fired because unreadable)
        self.error: str | None = None  # why ``start`` failed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="loadlab-thread-watch", daemon=True)

    def watch(self) -> None:
        self.began = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        clocks = ThreadClocks(self.pid)
        try:
            seen = clocks.read()
            while not self._stop.wait(self.every_s):
                now = clocks.read()
                ran = sorted(t for t, ns in now.items() if t not in self.ignore and seen.get(t) != ns)
                if ran:
                    self.thread_id = ran[0]
                    break
        except OSError:
            if not os.path.exists(f"/proc/{self.pid}"):
                return  # the server is gone: nothing to record
        finally:
            clocks.close()
        if not self._stop.is_set():
            self.fired = time.monotonic()
            try:
                self._start()
            except Exception as exc:  # noqa: BLE001 - kept for the run's record, not lost in this thread
                self.error = str(exc)
            self._stop.wait()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def threads_to_ignore(debug: str | None) -> frozenset[int] | None:
    """The server's threads a :class:`ThreadWatch` leaves out — the loop's and loadlab's own, from
    the app's ``/debug/stacks`` — or None when the loop's stacks are not the app's sampler's (they
    must then be py-spy's, from the start) or the app did not say."""
    snap = one_process(loop_stacks(debug)) if debug else None
    if not snap or not float(snap.get("hz") or 0) or snap.get("unavailable") or not snap.get("own_threads"):
        return None
    return frozenset(int(t) for t in snap["own_threads"])


def stacks_between(before: dict[str, Any] | None, now: dict[str, Any] | None) -> dict[str, Any] | None:
    """The app's loop stacks (``/debug/stacks``) recorded between two snapshots: one test's share
    of a session's (``loadlab ui``)."""
    if not now or not before or before.get("pid") != now.get("pid"):
        return now
    earlier = {text: count for text, count in before.get("stacks") or []}
    stacks = [[text, count - earlier.get(text, 0)] for text, count in now.get("stacks") or []]
    seconds = float(now.get("seconds") or 0) - float(before.get("seconds") or 0)
    return {**now, "stacks": [s for s in stacks if s[1] > 0], "seconds": round(max(0.0, seconds), 3)}


def median_cpu(timeseries: list[dict[str, Any]], key: str) -> float | None:
    """The median of a process's CPU over a run's seconds (the first, a start-up, left out)."""
    values = [p[f"{key}_cpu_percent"] for p in timeseries[1:] if f"{key}_cpu_percent" in p]
    return round(statistics.median(values), 1) if values else None


def child_rate(main_rate: int) -> int:
    return max(1, round(main_rate / CHILD_RATE_DIVISOR))


def process_frame(pid: int, cmdline: str) -> str:
    """The frame py-spy writes for a process under ``--subprocesses``."""
    return f'process {pid}:"{cmdline}"'


def _cmdline(proc: psutil.Process) -> str:
    return " ".join(proc.cmdline())


def _is_python(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error, IndexError):
        return "python" in Path(proc.cmdline()[0]).name
    return False


@dataclass
class _Child:
    pid: int
    command: str
    chain: list[str]  # process frames from the server down to this child
    output: Path
    recorder: ManagedProcess
    started: float | None = None  # time.monotonic(): when its recorder began
    stopped: float | None = None  # when it was asked to stop (None: it ended with the child)
    exit_code: int | None = None


@dataclass
class ChildRecorders:
    """One ``py-spy record --pid`` per Python child of the server, started as the children appear
    (``on_demand``: the first time each runs after it was found)."""

    main_output: Path
    main_rate: int  # the rate every count is expressed in once merged: the loop's
    log_path: Path
    native: bool = False
    # With the loop sampled by the app: the rate the main py-spy recorded the server's process at,
    # and (set before the server stops) the app's /debug/stacks answer, to put in place of its loop.
    process_rate: int | None = None
    loop_stacks: dict[str, Any] | None = None
    # The app's /debug/stacks answer where the record starts (py-spy attached late, a web-UI test's
    # start): cut from the end's.
    loop_stacks_before: dict[str, Any] | None = None
    # When the main recorder began and stopped sampling the server (time.monotonic()), set by its
    # owner: with its samples of the server's main thread, the rate it reached (reached_rate).
    main_started: float | None = None
    main_stopped: float | None = None
    # py-spy on the server starts only when needed (ThreadWatch): if it never did, the profile is the
    # app's loop stacks (and the children's), not a missing one. Children found idle then get their
    # recorders the first time they run.
    on_demand: bool = False
    # The app's /debug/stacks answer kept during the load while no py-spy runs: the profile, should
    # the server die before the end's is read.
    loop_stacks_kept: dict[str, Any] | None = None
    children: dict[int, _Child] = field(default_factory=dict)
    server: tuple[int, str] | None = None  # pid, command line
    _stop: threading.Event = field(default_factory=threading.Event)
    _closing: bool = False
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # On demand: children found idle, by PID → (their schedstat's fd, its time then, (command, chain))
    _idle: dict[int, tuple[int, int, tuple[str, list[str]]]] = field(default_factory=dict)

    @property
    def rate(self) -> int:
        return child_rate(self.main_rate)

    def watch(self, server_pid: Callable[[], int | None]) -> None:
        """Poll the server's tree from a thread until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._run, args=(server_pid,), name="loadlab-child-recorders", daemon=True
        )
        self._thread.start()

    def _run(self, server_pid: Callable[[], int | None]) -> None:
        pid = server_pid()
        if pid is None:
            return
        with contextlib.suppress(psutil.Error):
            self.server = (pid, _cmdline(psutil.Process(pid)))
        scanned = -math.inf
        try:
            # The tree is scanned every POLL_S; on demand, a child found idle is looked at every WATCH_S.
            while not self._stop.wait(WATCH_S if self._idle else POLL_S):
                if time.monotonic() - scanned >= POLL_S * 0.9:
                    scanned = time.monotonic()
                    with contextlib.suppress(psutil.Error):
                        self._scan(psutil.Process(pid))
                self._wake_idle()
        finally:
            for clock, _, _ in self._idle.values():
                os.close(clock)
            self._idle.clear()

    def _scan(self, server: psutil.Process) -> None:
        now = time.time()
        tree = server.children(recursive=True)
        pids = {server.pid, *(p.pid for p in tree)}
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                if proc.pid in self.children or proc.pid in self._idle:
                    continue
                if now - proc.create_time() < MIN_AGE_S or not _is_python(proc):
                    continue
                command = _cmdline(proc)
                if HELPER_MARK in command:
                    continue  # multiprocessing's resource tracker: no app code runs there
                chain = [process_frame(p.pid, _cmdline(p)) for p in reversed(proc.parents()) if p.pid in pids]
                chain.append(process_frame(proc.pid, command))
                if self.on_demand:
                    try:  # its main thread's time on a CPU (a pool's worker runs its tasks there)
                        clock = os.open(f"/proc/{proc.pid}/schedstat", os.O_RDONLY)
                    except (FileNotFoundError, ProcessLookupError):
                        continue  # it ended meanwhile
                    except OSError:
                        self._attach(proc.pid, command, chain)  # cannot tell when it runs: from now
                        continue
                    try:
                        self._idle[proc.pid] = (clock, int(os.pread(clock, 64, 0).split()[0]), (command, chain))
                    except (OSError, ValueError, IndexError):
                        os.close(clock)
                        self._attach(proc.pid, command, chain)
                    continue
                self._attach(proc.pid, command, chain)

    def _wake_idle(self) -> None:
        """On demand: a child found idle gets its recorder the first time it runs (its main
        thread's time on a CPU grows); one that ends first never gets one."""
        for pid, (clock, baseline, (command, chain)) in list(self._idle.items()):
            try:
                ran = int(os.pread(clock, 64, 0).split()[0]) != baseline
            except (OSError, ValueError, IndexError):
                ran = None  # gone
            if ran is False:
                continue
            os.close(clock)
            del self._idle[pid]
            if ran:
                self._attach(pid, command, chain)

    def _attach(self, pid: int, command: str, chain: list[str]) -> None:
        """A recorder on child ``pid``, from now."""
        output = self.main_output.with_name(f".{self.main_output.stem}.child-{pid}.txt")
        # --native cannot be combined with --nonblocking in py-spy
        argv = pyspy_argv(
            output, rate=self.rate, native=self.native, nonblocking=not self.native, pid=pid, subprocesses=False
        )
        with self._lock:
            if self._closing:
                return
            recorder = ManagedProcess(
                argv, name="py-spy (child)", log_path=self.log_path, stop_ladder=PYSPY_STOP_LADDER
            )
            self.children[pid] = _Child(pid, command, chain, output, recorder.start(), started=time.monotonic())

    def mark_loop_start(self, debug: str) -> None:
        """py-spy attaches now, late (``--expect-workers``, the agent): the app's loop stacks so
        far, to be cut from those at the end."""
        if self.process_rate is not None:
            self.loop_stacks_before = one_process(loop_stacks(debug))

    def keep_loop_stacks(self, debug: str) -> None:
        """While an on-demand py-spy has not started, the app's loop stacks are the whole profile,
        and they live in the server: kept now and then (each answer costs the loop a few ms), so a
        server that dies keeps its profile up to then."""
        # Within the once-a-second poll: a loop that cannot answer in 2 s is not waited for.
        if self.process_rate is not None and (now := one_process(loop_stacks(debug, timeout=2.0))) is not None:
            self.loop_stacks_kept = now

    def take_loop_stacks(self, debug: str | None) -> None:
        """The app's loop stacks since the start (or :meth:`mark_loop_start`), read before the
        server stops: they replace py-spy's samples of the loop when the profile is merged."""
        if self.process_rate is not None and debug is not None:
            self.loop_stacks = stacks_between(self.loop_stacks_before, one_process(loop_stacks(debug)))

    def recorder_pids(self) -> dict[int, int]:
        """Each child's PID → its recorder's PID (a copy: the watcher adds)."""
        return {pid: c.recorder.pid for pid, c in list(self.children.items())}

    @property
    def pids(self) -> list[int]:
        """The recorders' PIDs."""
        return list(self.recorder_pids().values())

    def stop(self) -> None:
        """Stop every recorder (SIGINT: each writes its file), then the polling. Re-entrant.

        The polling thread must outlive the recorders it started: each gets SIGTERM from the kernel
        when the thread that forked it ends (``PR_SET_PDEATHSIG`` follows the thread), and would
        die without writing its file."""
        with self._lock:
            self._closing = True
        pending = [c for c in self.children.values() if c.exit_code is None]
        for child in pending:
            if child.recorder.poll() is None:
                child.stopped = time.monotonic()  # SIGINT ends its sampling
        if pending:  # at once: each takes a moment to write its file, and they do not wait on each other
            with ThreadPoolExecutor(len(pending), thread_name_prefix="loadlab-stop-child") as pool:
                for child, code in zip(pending, pool.map(lambda c: c.recorder.stop(), pending), strict=True):
                    child.exit_code = code
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop_in_place(self, main: list[str], summary: dict[str, Any]) -> tuple[list[str], list[str]]:
        """py-spy's lines of the server's process scaled to the loop's rate, its loop thread's left
        out when the app's sampler has the loop's stacks; and the sampler's lines, in py-spy's form."""
        assert self.process_rate is not None
        snap = self.loop_stacks or {}
        hz = float(snap.get("hz") or 0)
        ours = hz > 0 and bool(snap.get("stacks")) and snap.get("native_tid") is not None
        loop_thread = f"thread ({snap.get('native_tid') or (self.server or (0, ''))[0]})"
        reached = reached_rate(main, loop_thread, self.main_started, self.main_stopped, self.process_rate)
        summary["rate_reached"] = round(reached, 2) if self.main_started is not None else None
        factor = self.main_rate / reached
        kept = []
        for line in main:
            body, _, count = line.rpartition(" ")
            if not body or not count.isdigit():
                continue
            if ours and _in_thread(body, loop_thread):
                continue
            kept.append(f"{body} {max(1, round(int(count) * factor))}")
        if not ours:
            summary["loop"] = "py-spy"
            why = snap.get("unavailable") or "LOADLAB_LOOP_STACKS_HZ=0, or it did not answer"
            summary["loop_note"] = (
                f"the app's loop sampler gave no stacks ({why}); the loop is py-spy's, non-blocking at "
                f"{self.process_rate} Hz"
            )
            return kept, []
        thread = f"{loop_thread}: {snap.get('thread_name')}" if snap.get("thread_name") else loop_thread
        scale = self.main_rate / hz
        loop = [f"{thread};{text} {max(1, round(int(count) * scale))}" for text, count in snap["stacks"]]
        summary.update(loop="sampler", loop_rate=hz, loop_seconds=snap.get("seconds"))
        return kept, loop

    def merge_into(self, output: Path) -> dict[str, Any]:
        """Rewrite ``output`` (the main recorder's, server only) with process prefixes and append
        each child's samples, scaled to the main rate. Returns what ``run.json`` keeps of it."""
        summary: dict[str, Any] = {
            "mode": "split",
            "rate": self.process_rate or self.main_rate,
            "children_rate": self.rate,
            "children": [],
        }
        if self.process_rate is not None:
            summary["nonblocking"] = True
        wrote = output.exists()
        # On demand, no file of py-spy's (it never started, or died before writing): the app's loop
        # stacks (and the children's) are the profile.
        loop_alone = self.on_demand and not wrote
        if loop_alone and self.loop_stacks is None and self.loop_stacks_kept is not None:
            # The server died (or stopped answering) before its loop stacks were read at the end,
            # and no py-spy ran: the profile up to the last copy kept during the load.
            self.loop_stacks = stacks_between(self.loop_stacks_before, self.loop_stacks_kept)
            summary["loop_copy"] = True
        if self.server is None or not (wrote or loop_alone):
            return summary
        prefix = process_frame(*self.server)
        main = output.read_text().splitlines() if wrote else []
        if self.process_rate is not None:
            main, loop = self._loop_in_place(main, summary)
        else:
            loop = []
        lines = [f"{prefix};{line}" for line in main + loop if line.strip()]
        for child in self.children.values():
            samples, factor = 0, self.main_rate / self.rate
            with contextlib.suppress(OSError):
                recorded = child.output.read_text().splitlines()
                reached = reached_rate(recorded, f"thread ({child.pid})", child.started, child.stopped, self.rate)
                factor = self.main_rate / reached
                for line in recorded:
                    body, _, count = line.rpartition(" ")
                    if body and count.isdigit():
                        samples += int(count)
                        lines.append(f"{';'.join(child.chain)};{body} {max(1, round(int(count) * factor))}")
                child.output.unlink()
            summary["children"].append(
                {"pid": child.pid, "command": child.command, "samples": samples, "exit_code": child.exit_code,
                 "rate_reached": round(self.main_rate / factor, 2)}
            )  # fmt: skip
        tmp = output.with_name(output.name + ".merging")
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(output)
        return summary
