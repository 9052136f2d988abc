"""Parse py-spy's raw (folded) output and say what each thread is and what each sample was doing.

Pure functions over data; no I/O beyond :func:`read_raw`. The raw format, with ``--threads``,
``--subprocesses`` and optionally ``--native``, is one line per distinct stack::

    process 41:"python -m uvicorn app:app";thread (41): MainThread;f (file.py:12);g (file.py:3) 17

A process-pool child appears as a second ``process`` segment under its parent's. Frames are
``name (file:line)`` for Python and ``name (library.so)`` or ``0xaddr (library.so)`` for native code.
"""

from __future__ import annotations

import gzip
import os
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

_PROCESS = re.compile(r'process (\d+):"(.*?)";(?=process |thread )')
_THREAD = re.compile(r"^thread \((?:0x)?([0-9A-Fa-f]+)\)(?::\s*(.*))?$")
_FRAME = re.compile(r"^(.*) \((.*)\)$")


class Role(StrEnum):
    EVENT_LOOP = "event loop"
    ANYIO_WORKER = "AnyIO worker"  # Starlette/FastAPI def routes, Litestar sync_to_thread, anyio.to_thread
    ASGIREF_EXECUTOR = "asgiref executor"  # Django's sync views and middleware: asgiref's sync_to_async
    LOOP_EXECUTOR = "loop executor"  # the loop's default executor: Quart's run_sync, Falcon's sync_to_async
    EXECUTOR = "executor thread"  # another concurrent.futures thread pool's thread (idle, or the app's own)
    POOL_CHILD = "process-pool child"
    OTHER = "other"


class SampleKind(StrEnum):
    PARKED = "parked"  # the loop waits in its selector: healthy
    CPU = "cpu"  # running code
    WAIT = "wait"  # inside a blocking call (sleep, recv, lock…) while not parked
    UNKNOWN = "unknown"  # cannot tell without native frames


@dataclass(frozen=True)
class Frame:
    name: str
    file: str
    line: int | None
    native: bool = False  # C/C++ code (only recorded with --native), even when it has a line

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{self.name} ({where})"


@dataclass(frozen=True)
class ThreadKey:
    pid: int
    tid: int


@dataclass
class Thread:
    key: ThreadKey
    name: str = ""
    process_cmd: str = ""
    parent_pid: int | None = None  # set for a child process of the server
    samples: int = 0
    role: Role = Role.OTHER

    @property
    def label(self) -> str:
        name = self.name or f"thread {self.key.tid}"
        return f"{self.role.value}: {name} (pid {self.key.pid})"


@dataclass(frozen=True)
class Stack:
    thread: ThreadKey
    frames: tuple[Frame, ...]  # outermost first, as py-spy writes them
    count: int


@dataclass
class Profile:
    """Every stack of a raw profile, and the threads they ran on."""

    stacks: list[Stack] = field(default_factory=list)
    threads: dict[ThreadKey, Thread] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(s.count for s in self.stacks)

    def by_thread(self, key: ThreadKey) -> Iterator[Stack]:
        return (s for s in self.stacks if s.thread == key)


class ProfileFormatError(ValueError):
    """The raw profile is not py-spy's ``--format raw --threads`` output."""


def parse_frame(text: str) -> Frame:
    m = _FRAME.match(text)
    if not m:
        return Frame(text, "", None, native=True)
    name, where = m.group(1), m.group(2)
    file, sep, line = where.rpartition(":")
    if not (sep and line.isdigit()):
        file, line = where, ""
    python = file.endswith((".py", ".pyw")) or file.startswith("<")
    return Frame(name, file, int(line) if line else None, native=not python)


def parse_raw(lines: Iterable[str], source: str = "profile") -> Profile:
    """Parse py-spy raw output; roles are assigned by :func:`assign_roles`."""
    profile = Profile()
    frame_cache: dict[str, Frame] = {}
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\n")
        if not line.strip():
            continue
        body, _, count_text = line.rpartition(" ")
        if not body or not count_text.isdigit():
            raise ProfileFormatError(f"{source}:{lineno}: expected '<stack> <count>', got {line[:80]!r}")
        pid: int | None = None
        parent: int | None = None
        cmd = ""
        # A command line may itself hold ';' (python -c "a;b"), so process segments are matched
        # up to the quote that is followed by the next segment.
        while m := _PROCESS.match(body):
            parent, pid, cmd = pid, int(m.group(1)), m.group(2)
            body = body[m.end() :]
        parts = body.split(";")
        i = 0
        t = _THREAD.match(parts[0])
        if pid is None or t is None:
            raise ProfileFormatError(
                f"{source}:{lineno}: no 'process …;thread (…)' prefix; record with --threads "
                "(and --subprocesses) in --format raw"
            )
        tid_text = t.group(1)
        key = ThreadKey(pid, int(tid_text, 16) if parts[i].startswith("thread (0x") else int(tid_text))
        thread = profile.threads.get(key)
        if thread is None:
            thread = profile.threads[key] = Thread(key, process_cmd=cmd, parent_pid=parent)
        if t.group(2):
            thread.name = t.group(2).strip()
        frames = []
        for text in parts[i + 1 :]:
            frame = frame_cache.get(text)
            if frame is None:
                frame = frame_cache[text] = parse_frame(text)
            frames.append(frame)
        count = int(count_text)
        thread.samples += count
        profile.stacks.append(Stack(key, tuple(frames), count))
    assign_roles(profile)
    return profile


def read_raw(path: str | Path) -> Profile:
    """Read a raw profile file (gzip-compressed if its name ends in ``.gz``)."""
    if str(path).endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
            return parse_raw(f, source=str(path))
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_raw(f, source=str(path))


def _is_loop_runner(frame: Frame) -> bool:
    f = frame.file.replace("\\", "/")
    runner_names = ("run_forever", "Runner.run", "run_until_complete")
    return ("/asyncio/" in f and frame.name.endswith(runner_names)) or ("uvloop" in f and "run" in frame.name)


def _is_anyio_worker(thread: Thread, stacks: Iterable[Stack]) -> bool:
    if thread.name.startswith("AnyIO worker"):
        return True
    return any(
        "anyio/_backends" in f.file.replace("\\", "/") and f.name.endswith("WorkerThread.run")
        for s in stacks
        for f in s.frames
    )


# asyncio's default executor names its threads asyncio_0, asyncio_1…; uvloop's, uvloop_0…
_LOOP_EXECUTOR_NAME = re.compile(r"^(asyncio|uvloop)_\d+$")


def _runs_asgiref(stacks: Iterable[Stack]) -> bool:
    # asgiref's SyncToAsync runs every sync call (Django's def views, its sync middleware and
    # signals) through thread_handler, in whichever executor it picked.
    return any(
        "asgiref/sync.py" in f.file.replace("\\", "/") and f.name.endswith("thread_handler")
        for s in stacks
        for f in s.frames
    )


def _is_executor_thread(stacks: Iterable[Stack]) -> bool:
    return any(
        f.file.replace("\\", "/").endswith("concurrent/futures/thread.py") and f.name == "_worker"
        for s in stacks
        for f in s.frames
    )


def assign_roles(profile: Profile) -> None:
    """Label each thread with the pool it belongs to: the event loop, AnyIO's workers, asgiref's
    executor (Django), the loop's default executor (Quart, Falcon), another thread pool, a
    process-pool child, or other.

    Frames decide before names: the OS reuses a thread id, and py-spy may keep the name of the
    thread that had it first (an asgiref thread may be sampled as ``Thread-9 (join)``)."""
    stacks_of: dict[ThreadKey, list[Stack]] = {}
    for s in profile.stacks:
        stacks_of.setdefault(s.thread, []).append(s)
    for key, thread in profile.threads.items():
        mine = stacks_of.get(key, [])
        # A loop first: uvicorn's and gunicorn's workers are multiprocessing children too.
        if any(_is_loop_runner(f) for s in mine for f in s.frames):
            thread.role = Role.EVENT_LOOP
        elif thread.parent_pid is not None and "multiprocessing" in thread.process_cmd:
            thread.role = Role.POOL_CHILD
        elif _is_anyio_worker(thread, mine):
            thread.role = Role.ANYIO_WORKER
        elif _runs_asgiref(mine):
            thread.role = Role.ASGIREF_EXECUTOR
        elif _LOOP_EXECUTOR_NAME.match(thread.name):
            thread.role = Role.LOOP_EXECUTOR
        elif _is_executor_thread(mine):
            thread.role = Role.EXECUTOR
        else:
            thread.role = Role.OTHER
    # A pool thread under a name no pool gives (``loadlab-gil-probe``, ``Thread-3 (join)``) carries
    # the name of a thread that had its id before: in a process whose loop executor is seen, it is
    # one of that executor's threads (Quart, Falcon and Litestar leave no frame of their own there).
    # Not where asgiref runs: Django makes an executor per request, and those come and go.
    loop_executor_in = {k.pid for k, t in profile.threads.items() if t.role is Role.LOOP_EXECUTOR}
    loop_executor_in -= {k.pid for k, t in profile.threads.items() if t.role is Role.ASGIREF_EXECUTOR}
    for key, thread in profile.threads.items():
        if (
            thread.role is Role.EXECUTOR
            and key.pid in loop_executor_in
            and not thread.name.startswith("ThreadPoolExecutor-")
        ):
            thread.role = Role.LOOP_EXECUTOR


def asgiref_shared_threads(profile: Profile, min_samples: int = 5) -> dict[int, Thread]:
    """Per process, the one thread that ran all of asgiref's sync calls, where there is one.

    Django's request handler gives each request an executor of its own (``ThreadSensitiveContext``),
    so its ``def`` views run on as many threads as there are requests in flight. Outside it (a
    Starlette or FastAPI app calling ``sync_to_async``, ``thread_sensitive=True`` by default, as
    for Django's ORM) every call goes to asgiref's one shared thread: the calls wait in line for it,
    a one-server station whatever the load. That is a process whose asgiref work (at least
    ``min_samples`` samples) all ran on one thread."""
    busy: dict[int, dict[ThreadKey, int]] = {}
    for s in profile.stacks:
        if profile.threads[s.thread].role is Role.ASGIREF_EXECUTOR and _runs_asgiref([s]):
            per_thread = busy.setdefault(s.thread.pid, {})
            per_thread[s.thread] = per_thread.get(s.thread, 0) + s.count
    return {
        pid: profile.threads[next(iter(threads))]
        for pid, threads in busy.items()
        if len(threads) == 1 and sum(threads.values()) >= min_samples
    }


# Native functions that mean "this thread is waiting": kernel calls from libc, and the CPython C
# functions that release the GIL to wait (their libc leaf is often an unsymbolised address).
_WAIT_FUNCS = re.compile(
    r"^(epoll_wait|epoll_pwait2?|select|pselect6?|poll|ppoll|clock_nanosleep|__clock_nanosleep|"
    r"nanosleep|recv|recvfrom|recvmsg|read|__libc_read|__libc_recv|__libc_recvfrom|accept4?|"
    r"connect|__libc_connect|futex_wait|__futex_abstimed_wait_common(64)?|do_futex_wait|"
    r"pthread_cond_(timed|clock)?wait|__pthread_cond_wait|___pthread_cond_timedwait|sem_(timed|clock)?wait|"
    r"__lll_lock_wait|waitpid|__waitpid|fsync|fdatasync|"
    r"time_sleep|pysleep|PyThread_acquire_lock_timed|lock_PyThread_acquire_lock|rlock_acquire|"
    r"acquire_timed|select_select(_impl)?|select_poll_poll(_impl)?|select_epoll_poll(_impl)?|"
    r"sock_recv(_into|from)?(_guts)?|sock_accept|sock_call(_ex)?|os_read(_impl)?|os_waitpid(_impl)?|"
    r"_multiprocessing_SemLock_acquire(_impl)?|_queue_SimpleQueue_get(_impl)?)"
    r"(\.isra.*|\.part.*|\.constprop.*)?$"
)
_STDLIB = os.path.join(os.path.abspath(sysconfig.get_paths()["stdlib"]), "").replace("\\", "/")
_LOADLAB = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "").replace("\\", "/")


def is_selector_wait(frames: tuple[Frame, ...]) -> bool:
    """True when the innermost Python frame is the event loop waiting for I/O (parked)."""
    for frame in reversed(frames):
        if frame.native:
            continue
        f = frame.file.replace("\\", "/")
        if f.endswith("selectors.py") and frame.name.endswith("select"):
            return True
        # uvloop's loop is C: while it waits, the innermost Python frame is the runner itself.
        return _is_loop_runner(frame)
    return False


def is_loop_callback(frames: tuple[Frame, ...]) -> bool:
    """True when a loop-thread sample is inside a callback the running loop called (not parked,
    and not start-up code that ran before the loop)."""
    return any(_is_loop_runner(f) for f in frames) and not is_selector_wait(frames)


_STARTUP_FILES = ("uvicorn/config.py", "uvicorn/importer.py", "uvicorn/lifespan/on.py")


def is_startup(frames: tuple[Frame, ...]) -> bool:
    """True for the server's own start-up and shut-down work on the loop: importing the app and
    running its lifespan. It blocks the loop too, but before (or after) any request is served."""
    return any(f.file.replace("\\", "/").endswith(_STARTUP_FILES) for f in frames)


def native_tail(frames: tuple[Frame, ...]) -> tuple[Frame, ...]:
    """The native frames below the innermost Python frame (empty without ``--native``)."""
    i = len(frames)
    while i > 0 and frames[i - 1].native:
        i -= 1
    return frames[i:]


def is_waiting(frames: tuple[Frame, ...]) -> bool:
    """True when the native tail shows a call that waits (sleep, I/O, lock) rather than computes."""
    return any(_WAIT_FUNCS.match(f.name) for f in native_tail(frames))


def is_library_file(file: str) -> bool:
    """Code that is not the user's: the stdlib, site-packages, loadlab, native libraries, frozen."""
    f = file.replace("\\", "/")
    return (
        not f.endswith(".py")
        or f.startswith("<")
        or "/site-packages/" in f
        or "/dist-packages/" in f
        or "/lib/python3" in f
        or f.startswith(_STDLIB)
        or _is_loadlab_file(f)
    )


def _is_loadlab_file(f: str) -> bool:
    # loadlab's own frames (the instrumentation wraps every request), recognised even in a
    # profile recorded from another checkout: the part after "/loadlab/" is one of our modules.
    if f.startswith(_LOADLAB):
        return True
    _, sep, rest = f.rpartition("/loadlab/")
    return bool(sep) and os.path.isfile(os.path.join(_LOADLAB, rest))


def classify_sample(frames: tuple[Frame, ...], has_native: bool) -> SampleKind:
    """What a loop-thread sample was doing: parked, computing, or waiting inside a call."""
    if is_selector_wait(frames):
        return SampleKind.PARKED
    if not has_native:
        return SampleKind.UNKNOWN
    return SampleKind.WAIT if is_waiting(frames) else SampleKind.CPU


# A profile recorded with native frames (py-spy --native) has them in nearly every sample.
NATIVE_SHARE = 0.5


def has_native_frames(profile: Profile) -> bool:
    """Whether the profile was recorded with native frames: at least ``NATIVE_SHARE`` of its
    samples have one. A few odd frames are not: a non-pausing py-spy that reads a stack while it
    changes can put out garbage (``http_version (asgi:-16054015)`` in 5 of 5,278 samples of one
    run), and taken for native frames they made every loop sample computing: a ``time.sleep``
    blocker was offered to a process pool."""
    total = native = 0
    for s in profile.stacks:
        total += s.count
        if any(f.native for f in s.frames):
            native += s.count
    return total > 0 and native >= NATIVE_SHARE * total


_ANONYMOUS = re.compile(r"\.<locals>\.<(genexpr|lambda|listcomp|dictcomp|setcomp)>$")


def enclosing_name(qualname: str) -> str:
    """A generator expression, a lambda or a comprehension counts as the function that encloses
    it: ``export.<locals>.<genexpr>`` → ``export``. A nested function keeps its qualified name
    (``create_app.<locals>.handler``); where it sits in the app is found from the frames around it."""
    while True:
        shorter = _ANONYMOUS.sub("", qualname)
        if shorter == qualname:
            return qualname
        qualname = shorter


def innermost_app_frame(frames: tuple[Frame, ...]) -> Frame | None:
    for frame in reversed(frames):
        if not frame.native and not is_library_file(frame.file):
            return frame
    return None


def is_idle_sample(thread: Thread, frames: tuple[Frame, ...], has_native: bool) -> bool:
    """Whether a sample shows its thread off-CPU (for the on-CPU-only flame graph)."""
    if thread.role is Role.EVENT_LOOP and is_selector_wait(frames):
        return True
    if has_native:
        return is_waiting(frames)
    # Without native frames only Python-level waits can be recognised.
    for frame in reversed(frames):
        if frame.native:
            continue
        f = frame.file.replace("\\", "/")
        return (f.endswith("threading.py") and frame.name.endswith("wait")) or (
            f.endswith("selectors.py") and frame.name.endswith("select")
        )
    return False
