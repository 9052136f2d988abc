"""Child processes as context managers: whatever happens, they are stopped on the way out.

Stopping is a ladder — SIGINT, then SIGTERM, then SIGKILL, each with a timeout — followed by a
check, by PID, that none of the process's descendants (uvicorn workers, say) is left; any that is
gets killed and is listed in :attr:`ManagedProcess.leftovers` so a run can record it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Protocol

import httpx
import psutil

from loadlab._guard import TOKEN_VAR, carriers
from loadlab.config import LOOPBACK, with_checkout_on_path

if TYPE_CHECKING:
    from loadlab.recording import ChildRecorders, ThreadWatch

__all__ = ["LOOPBACK"]  # re-exported: processes and tests bind to it

STOP_LADDER: tuple[tuple[signal.Signals, float], ...] = (
    (signal.SIGINT, 8.0),
    (signal.SIGTERM, 4.0),
    (signal.SIGKILL, 2.0),
)


# For a server master: SIGTERM is graceful in uvicorn and gunicorn (gunicorn's SIGINT is not).
MASTER_LADDER: tuple[tuple[signal.Signals, float], ...] = (
    (signal.SIGTERM, 8.0),
    (signal.SIGINT, 3.0),
    (signal.SIGKILL, 2.0),
)
# For a master that never answered: uvicorn holds SIGTERM and SIGINT until the app is imported
# and started, so a slow import (or a hung startup) would sit out the whole ladder above.
UNREADY_LADDER: tuple[tuple[signal.Signals, float], ...] = (
    (signal.SIGTERM, 2.0),
    (signal.SIGKILL, 2.0),
)


def _alive(proc: psutil.Process) -> bool:
    # A zombie has exited; it only waits for its parent (py-spy, say) to reap it.
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for the processes to exit; return those still alive."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if _alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    return alive


# How long a process that outlived its tree's stop ladder gets between SIGTERM and SIGKILL.
LEFTOVER_GRACE_S = 2.0
# The server's own exit code, written by the launcher: under py-spy the server is py-spy's child,
# so its exit status is py-spy's to collect, not ours.
SERVER_EXIT_FILE_VAR = "LOADLAB_SERVER_EXIT_FILE"


class _Guardian:
    """The one ``loadlab._guard`` process of this harness, told the token of every child tree."""

    _lock = threading.Lock()
    _stdin: IO[bytes] | None = None

    @classmethod
    def register(cls, token: str) -> None:
        with cls._lock:
            if cls._stdin is None:
                env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
                with contextlib.suppress(OSError):
                    guard = subprocess.Popen(
                        [sys.executable, "-m", "loadlab._guard"],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        env=env,
                        start_new_session=True,  # it must outlive the harness, and its Ctrl-C
                    )
                    cls._stdin = guard.stdin
            if cls._stdin is not None:
                with contextlib.suppress(OSError, ValueError):
                    cls._stdin.write(f"{token}\n".encode())
                    cls._stdin.flush()


def _signal_name(code: int) -> str:
    with contextlib.suppress(ValueError):
        return signal.Signals(-code).name
    return f"signal {-code}"


def describe_exit(code: int | None) -> str:
    """``code 3``, ``killed by SIGKILL``, or ``exit code unknown``."""
    if code is None:
        return "exit code unknown"
    return f"killed by {_signal_name(code)}" if code < 0 else f"code {code}"


class ProcessError(RuntimeError):
    """A child process failed to start or died; the message ends with its last log lines."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    # Linux only: the kernel sends SIGTERM to the child if we die, even by SIGKILL, so a crash
    # of the harness cannot leave a server running. Best effort elsewhere.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedProcess:
    """A child process owned by a ``with`` block. Its stdout and stderr go to ``log_path``.

    The child runs in its own session, so a Ctrl-C on the terminal reaches only the harness, which
    then stops its children in the order it chooses.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: str | Path | None = None,
        stop_ladder: Sequence[tuple[signal.Signals, float]] = STOP_LADDER,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.env = with_checkout_on_path(dict(os.environ if env is None else env))
        self.cwd = cwd
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        self.stop_ladder = tuple(stop_ladder)
        self.popen: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.leftovers: list[int] = []
        self._descendants: dict[int, psutil.Process] = {}
        # Every process of this child's tree inherits the token, so one that escaped the tree
        # (setsid, a double fork) is still found by it, here and by the guardian.
        self.token = uuid.uuid4().hex
        self.env[TOKEN_VAR] = self.token

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise ProcessError(f"{self.name} was not started")
        return self.popen.pid

    def start(self) -> ManagedProcess:
        _Guardian.register(self.token)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.popen = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            except OSError as exc:
                raise ProcessError(f"could not start {self.name} ({self.argv[0]}): {exc}") from exc
        return self

    def poll(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def wait_exit(self, timeout: float) -> int | None:
        """Its exit code as soon as it exits, waiting at most ``timeout`` seconds; None if it is
        still running (or never started)."""
        if self.popen is None:
            return None
        try:
            return self.popen.wait(max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def tail(self, lines: int = 15) -> str:
        """The last lines the process wrote, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def remember_descendants(self) -> None:
        """Note the process's current descendants, so :meth:`stop` can check none outlives it."""
        if self.popen is None:
            return
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(self.popen.pid).children(recursive=True):
                self._descendants.setdefault(child.pid, child)

    def descendants(self) -> list[psutil.Process]:
        """Every descendant seen so far (still running or not)."""
        self.remember_descendants()
        return list(self._descendants.values())

    def stop(self) -> int | None:
        """Stop the process with the signal ladder; kill any descendant left behind."""
        if self.popen is None:
            return None
        self.remember_descendants()
        for sig, timeout in self.stop_ladder:
            if self.popen.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        self.returncode = self.popen.wait()
        killed = []
        for pid, proc in self._descendants.items():
            with contextlib.suppress(psutil.Error):
                if _alive(proc):
                    proc.kill()
                    killed.append(proc)
                    if pid not in self.leftovers:
                        self.leftovers.append(pid)
        psutil.wait_procs(killed, timeout=2.0)
        self.kill_escaped()
        return self.returncode

    def escaped(self, exclude: frozenset[int] = frozenset()) -> list[psutil.Process]:
        """Processes that carry this child's token but are no descendant seen so far: detached
        with ``setsid`` or a double fork, or orphaned before they were seen."""
        out = []
        for pid in carriers({self.token}, {os.getpid(), *exclude}):
            with contextlib.suppress(psutil.Error):
                out.append(psutil.Process(pid))
        return out

    def kill_escaped(self, exclude: frozenset[int] = frozenset()) -> None:
        """SIGTERM, then SIGKILL after a short grace, whatever of this tree is still running."""
        rest = self.escaped(exclude)
        for proc in rest:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        for proc in _wait_gone(rest, LEFTOVER_GRACE_S):
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(rest, timeout=2.0)
        for proc in rest:
            if proc.pid not in self.leftovers:
                self.leftovers.append(proc.pid)

    def __enter__(self) -> ManagedProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        if self._own_log and exc_type is None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()


class _Watched(Protocol):
    name: str

    def poll(self) -> int | None: ...

    def tail(self, lines: int = 15) -> str: ...


def wait_ready(process: _Watched, url: str, timeout: float = 30.0, any_status: bool = False) -> float:
    """Poll ``url`` until it answers 200 (any HTTP answer with ``any_status``); return the seconds
    it took. Raises :class:`ProcessError` with the process's last output if it exits or the time
    runs out.
    """
    start = time.monotonic()
    deadline = start + timeout
    with httpx.Client(timeout=1.0) as client:
        while True:
            code = process.poll()
            if code is not None:
                raise ProcessError(
                    f"{process.name} exited with code {code} before it was ready; its last output:\n{process.tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                status = client.get(url).status_code
                if status == 200 or any_status:
                    return time.monotonic() - start
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{process.name} did not answer {url} within {timeout:g} s; its last output:\n{process.tail()}"
                )
            time.sleep(0.05)


def uvicorn_argv(
    app: str, *, port: int, host: str = LOOPBACK, factory: bool = False, extra: Sequence[str] = ()
) -> list[str]:
    """The command line that runs ``app`` (``module:attr``) under uvicorn with this Python."""
    argv = [sys.executable, "-m", "uvicorn", app, "--host", host, "--port", str(port), "--no-access-log"]
    if factory:
        argv.append("--factory")
    return argv + list(extra)


@contextlib.contextmanager
def uvicorn_server(
    app: str,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    factory: bool = False,
    health_path: str = "/health",
    log_path: str | Path | None = None,
    name: str = "uvicorn",
    ready_timeout: float = 30.0,
    extra: Sequence[str] = (),
) -> Iterator[tuple[ManagedProcess, str]]:
    """Run ``app`` under uvicorn on 127.0.0.1 and yield ``(process, base_url)`` once it is ready."""
    port = port or free_port()
    argv = uvicorn_argv(app, port=port, factory=factory, extra=extra)
    base_url = f"http://{LOOPBACK}:{port}"
    with ManagedProcess(argv, name=name, env=env, log_path=log_path) as proc:
        wait_ready(proc, base_url + health_path, timeout=ready_timeout)
        yield proc, base_url


def upstream_stub(
    port: int | None = None, log_path: str | Path | None = None
) -> contextlib.AbstractContextManager[tuple[ManagedProcess, str]]:
    """The target app's slow upstream service, as its own uvicorn process."""
    return uvicorn_server("target_app.upstream:app", port=port, log_path=log_path, name="upstream stub")


LOCUST_OUTPUTS = "locust"  # <folder>/locust_stats.csv …, locust.html, locust.json, locust.log


def locust_argv(
    locustfile: Path | str,
    host: str,
    *,
    users: int,
    spawn_rate: float,
    run_time_s: float,
    outputs: Path,
    tags: Sequence[str] = (),
    processes: int = 1,
    stop_timeout_s: float = 2,
    extra: Sequence[str] = (),
    master: tuple[int, str, int, float] | None = None,
) -> list[str]:
    """Locust's headless command line, the one every loadlab command uses: ``outputs`` is the
    folder of its CSV files, its HTML report and its JSON stats (written at exit: the complete
    source, see ``results.read_locust_stats``), all named ``locust…``. ``master`` = (workers,
    bind address, port, seconds to wait for them): a master for Locust workers started elsewhere."""
    prefix = str(outputs / LOCUST_OUTPUTS)
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "-H", host]
    argv += [
        "-u",
        str(users),
        "-r",
        f"{spawn_rate:g}",
        "-t",
        f"{run_time_s:g}s",
        "--stop-timeout",
        f"{stop_timeout_s:g}",
    ]
    argv += ["--csv", prefix, "--html", f"{prefix}.html", "--json-file", prefix, "--only-summary"]
    if processes > 1:
        argv += ["--processes", str(processes)]
    if master is not None:
        workers, bind, port, wait_s = master
        argv += ["--master", "--expect-workers", str(workers), "--expect-workers-max-wait", f"{wait_s:.0f}"]
        argv += ["--master-bind-host", bind, "--master-bind-port", str(port)]
    if tags:
        argv += ["-T", *tags]
    return argv + list(extra)


def locust_worker_command(locustfile: Path | str, master_host: str, master_port: int, tags: Sequence[str] = ()) -> str:
    """The command that starts one Locust worker for a master started with ``locust_argv(master=…)``
    (on another machine: the same locustfile, and ``--master-host`` an address of this one)."""
    argv = [
        "locust",
        "-f",
        str(locustfile),
        "--worker",
        "--master-host",
        master_host,
        "--master-port",
        str(master_port),
    ]
    if tags:
        argv += ["-T", *tags]
    return shlex.join(argv)


def locust_web_argv(locustfile: Path | str, host: str, *, web_port: int, extra: Sequence[str] = ()) -> list[str]:
    """Locust with its web UI on loopback: the form pre-filled with a load that shows something
    (Locust's default, 1 user, would be the canary alone); ``extra`` comes later and wins."""
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "-H", host]
    argv += ["--web-host", LOOPBACK, "--web-port", str(web_port), "-u", "11", "-r", "10"]
    return argv + list(extra)


# py-spy writes its profile on SIGINT; a big one takes a few seconds.
PYSPY_STOP_LADDER: tuple[tuple[signal.Signals, float], ...] = (
    (signal.SIGINT, 20.0),
    (signal.SIGTERM, 3.0),
    (signal.SIGKILL, 2.0),
)
ALLOW_PTRACE_VAR = "LOADLAB_ALLOW_PTRACE"  # read by loadlab._launch


def launched(argv: Sequence[str]) -> list[str]:
    """``python -m MODULE …`` run through loadlab's launcher (a parent-death signal; with
    ``LOADLAB_ALLOW_PTRACE`` in its env, py-spy may attach to it under Yama's ptrace_scope 1)."""
    argv = list(argv)
    if argv[:2] == [sys.executable, "-m"]:
        return [sys.executable, "-m", "loadlab._launch", *argv[2:]]
    return argv


def pyspy_binary() -> str | None:
    """py-spy: ``LOADLAB_PYSPY`` if set, else the one next to this Python (the venv's), else on PATH."""
    chosen = os.environ.get("LOADLAB_PYSPY")
    if chosen:
        return chosen if os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def pyspy_argv(
    output: Path,
    *,
    rate: int = 100,
    native: bool = False,
    nonblocking: bool = False,
    pid: int | None = None,
    subprocesses: bool = True,
) -> list[str]:
    """``py-spy record`` in raw (folded) format with every thread, idle ones included, and (unless
    ``subprocesses`` is False: see :mod:`loadlab.recording`) every subprocess; the server's command
    line follows after ``--``, or py-spy attaches to ``pid``."""
    binary = pyspy_binary()
    if binary is None:
        raise ProcessError(
            "py-spy was not found (pip install 'py-spy>=0.4.2', or set LOADLAB_PYSPY); "
            "see `loadlab doctor`, or run the load test alone with --no-profile"
        )
    argv = [binary, "record", "--rate", str(rate), "--idle", "--threads"] + (["--subprocesses"] if subprocesses else [])
    argv += ["--format", "raw", "--full-filenames", "--output", str(output)]
    if native:
        argv.append("--native")
    if nonblocking:
        argv.append("--nonblocking")
    if pid is not None:
        argv += ["--pid", str(pid)]
    return argv


class ProfiledServer:
    """A server process, optionally run as the child of ``py-spy record``.

    Stopping order matters: py-spy stopped first leaves the server (and its workers) running, so
    the server master is stopped first (SIGTERM: graceful in uvicorn and gunicorn); py-spy sees it
    exit, writes its output and exits; then the usual ladder and PID check clean up the rest.
    """

    def __init__(
        self,
        server_argv: Sequence[str],
        *,
        profiler_argv: Sequence[str] | None,
        env: Mapping[str, str] | None,
        log_path: Path,
        stop_timeout: float = 20.0,
        attach: bool = False,
        children: ChildRecorders | None = None,
        on_demand: bool = False,
    ) -> None:
        argv = list(server_argv)
        # children: py-spy records the server's own process only; these record its children.
        self.children = children
        self.children_summary: dict[str, object] | None = None
        env = dict(os.environ if env is None else env)
        self.exit_file = log_path.with_name(f".{log_path.stem}-exit-code")
        # attach: py-spy is started later, by PID (start_profiler), when the load begins; on_demand:
        # when a thread other than the loop first runs (watch_threads).
        self.on_demand = bool(profiler_argv) and on_demand
        self.attach_argv = list(profiler_argv) if profiler_argv and (attach or on_demand) else None
        self.watch: ThreadWatch | None = None
        self._spy_lock = threading.Lock()
        self._closing = False
        self.spy: ManagedProcess | None = None
        self.spy_log = log_path.with_name("py-spy.log")
        self.spy_exit_code: int | None = None
        if self.attach_argv is not None:
            profiler_argv = None
            argv = launched(argv)
            env[ALLOW_PTRACE_VAR] = "1"
        if profiler_argv:
            # Under py-spy the server is a grandchild: the launcher gives it a parent-death signal
            # and writes down its exit code, which only py-spy could otherwise collect.
            if argv[:2] == [sys.executable, "-m"]:
                argv = [sys.executable, "-m", "loadlab._launch", *argv[2:]]
                env[SERVER_EXIT_FILE_VAR] = str(self.exit_file)
            argv = [*profiler_argv, "--", *argv]
        self.profiled = bool(profiler_argv)
        self.name = "server"
        self.process = ManagedProcess(argv, name=self.name, env=env, log_path=log_path)
        self.stop_timeout = stop_timeout
        self.stopped = False
        # False while the server has not yet answered (set by whoever waits for it): it is then
        # stopped with UNREADY_LADDER; None when nobody says, and the full ladder applies.
        self.ready: bool | None = None
        self._server: psutil.Process | None = None

    def __enter__(self) -> ProfiledServer:
        self.process.start()
        if self.children is not None and (self.attach_argv is None or self.on_demand):
            self.children.main_started = time.monotonic() if self.profiled else None
            self.children.watch(self.server_pid)  # from the start (with attach, they start with py-spy)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def server_pid(self, timeout: float = 10.0) -> int | None:
        """The server master's PID: py-spy's child when profiled, else the process itself."""
        if not self.profiled:
            return self.process.pid
        if self._server is not None:
            return self._server.pid
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.process.pid).children()
                if children:
                    self._server = children[0]
                    return int(children[0].pid)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        return None

    def server_exit_code(self) -> int | None:
        """The server master's own exit code, once it has exited (None if unknown: killed by a
        signal under py-spy, or still running)."""
        if not self.profiled:
            return self.process.poll()
        with contextlib.suppress(OSError, ValueError):
            return int(self.exit_file.read_text().strip())
        return None

    def _master_running(self) -> bool:
        if self._server is None:
            return self.process.poll() is None
        try:
            return self._server.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def failure(self) -> str | None:
        """None while the server (and py-spy, when profiling) runs; else what stopped, in a
        sentence that blames the right process with its own exit code."""
        spy = self.process.poll()
        if not self.profiled:
            attached = self.spy.poll() if self.spy is not None and self.spy_exit_code is None else None
            if spy is None and attached is not None:  # a py-spy attached by PID died, not stopped by us
                return (
                    f"py-spy exited ({describe_exit(attached)}) while the server was being profiled; "
                    "the server still running"
                )
            return None if spy is None else f"the server exited ({describe_exit(spy)})"
        running = self._master_running()
        if spy is not None and (spy != 0 or running):
            server = "still running" if running else f"then stopped ({describe_exit(self.server_exit_code())})"
            return f"py-spy exited ({describe_exit(spy)}) while the server was being profiled; the server {server}"
        if running:
            return None
        code = self.server_exit_code()
        how = describe_exit(code) if code is not None else "killed by a signal, or crashed: exit code unknown"
        return f"the server exited ({how})"

    def tail(self, lines: int = 15) -> str:
        """The last lines the server (and py-spy) wrote."""
        return self.process.tail(lines)

    def poll(self) -> int | None:
        """None while the server master runs, else its own exit code (-1 if unknown)."""
        if self._master_running() and self.process.poll() is None:
            return None
        code = self.server_exit_code()
        return -1 if code is None else code

    def profiler_pids(self) -> list[int]:
        """py-spy's processes (the server's own recorder, then its children's), for CPU meters."""
        main = [] if not (self.profiled or self.spy) else [self.spy.pid if self.spy else self.process.pid]
        return main + (self.children.pids if self.children is not None else [])

    def start_profiler(self) -> int | None:
        """With ``attach`` (at the load's start) or ``on_demand`` (from :class:`ThreadWatch`'s
        thread): start py-spy on the running server now; its PID (None if not attaching). ``spy``
        is set only once py-spy runs: other threads read it meanwhile."""
        with self._spy_lock:
            if self.attach_argv is None or self.spy is not None or self._closing:
                return None
            argv = [*self.attach_argv, "--pid", str(self.process.pid)]
            spy = ManagedProcess(argv, name="py-spy", log_path=self.spy_log, stop_ladder=PYSPY_STOP_LADDER)
            self.spy = spy.start()
            if self.children is not None:
                self.children.main_started = time.monotonic()
                if not self.on_demand:
                    self.children.watch(self.server_pid)
            return self.spy.pid

    def watch_threads(self, ignore: frozenset[int] | None) -> None:
        """With ``on_demand``: attach py-spy the first time a thread of the server other than
        ``ignore`` (the loop's and loadlab's own) runs; at once when ``ignore`` is unknown (None:
        the app did not say, or its loop is not sampled in the app)."""
        if not self.on_demand or self.watch is not None:
            return
        if ignore is None:
            self.start_profiler()
            return
        from loadlab.recording import ThreadWatch  # noqa: PLC0415 - recording imports this module

        self.watch = ThreadWatch(self.process.pid, ignore, self.start_profiler)
        self.watch.watch()

    def on_demand_summary(self) -> dict[str, object] | None:
        """What ``run.json``'s ``profiler`` keeps of an on-demand py-spy: whether it started, how
        long after the watch began, for which thread."""
        if not self.on_demand:
            return None
        watch = self.watch
        after = None
        if watch is not None and watch.began is not None and watch.fired is not None:
            after = round(watch.fired - watch.began, 2)
        return {"started": self.spy is not None, "after_s": after, "thread": watch.thread_id if watch else None}

    def stop(self) -> list[int]:
        """Stop the server, let py-spy write its profile, and return PIDs that had to be killed."""
        # Re-entrant: if an interrupt lands halfway, the next call (the with-block's exit) goes on
        # from where this one stopped; only a finished stop is final.
        with self._spy_lock:
            self._closing = True  # an on-demand py-spy not started by now never will be
        if self.spy is not None and self.spy_exit_code is None:
            if self.children is not None and self.children.main_stopped is None:
                self.children.main_stopped = time.monotonic()  # SIGINT ends its sampling
            self.spy_exit_code = self.spy.stop()  # attached: py-spy first (SIGINT: it writes), the server after
        if self.watch is not None:
            self.watch.stop()  # after the py-spy it started (which dies with the thread that forked it)
        if self.children is not None:
            self.children.stop()  # the children's recorders first too, while what they sample still runs
        if self.stopped or self.process.popen is None:
            return self.process.leftovers
        self.process.remember_descendants()
        if self.profiled and self.process.poll() is None:
            master = self._server
            if master is not None:
                # SIGTERM first: a graceful shutdown for uvicorn and gunicorn alike (gunicorn's SIGINT
                # is its quick one, which skips the app's lifespan shutdown). A server still importing
                # the app defers both (uvicorn captures them) until it is up: only SIGKILL ends it then.
                for sig, timeout in UNREADY_LADDER if self.ready is False else MASTER_LADDER:
                    with contextlib.suppress(psutil.Error):
                        master.send_signal(sig)
                    if _wait_gone([master], timeout) == []:
                        break
            # Whatever the master left would keep py-spy sampling: orphans of a crashed master, a
            # stuck worker, and ones that left the tree but that py-spy still follows (a double
            # fork it saw as a child; found by the tree's token, py-spy itself spared). Give them
            # a moment to exit by themselves, then SIGTERM, then SIGKILL, and record them, so
            # py-spy writes its profile and exits.
            with contextlib.suppress(psutil.Error):
                spared = {self.process.pid, master.pid if master else -1}
                rest = [p for p in self.process.descendants() if p.pid not in spared]
                rest += [p for p in self.process.escaped(frozenset(spared)) if p.pid not in {r.pid for r in rest}]
                for proc in _wait_gone(rest, LEFTOVER_GRACE_S):
                    with contextlib.suppress(psutil.Error):
                        proc.terminate()
                        self.process.leftovers.append(proc.pid)
                for proc in _wait_gone(rest, LEFTOVER_GRACE_S):
                    with contextlib.suppress(psutil.Error):
                        proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.popen.wait(self.stop_timeout)
            if self.children is not None and self.children.main_stopped is None:
                self.children.main_stopped = time.monotonic()  # py-spy stops with the server
        if not self.profiled and self.ready is False:
            self.process.stop_ladder = UNREADY_LADDER
        self.process.stop()
        self.stopped = True
        if self.children is not None and self.children_summary is None:
            self.children_summary = self.children.merge_into(self.children.main_output)
        return self.process.leftovers
