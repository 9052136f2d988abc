"""Servers, load generators and CPU meters of the benchmark, built on ``loadlab.processes``.

Every child process is one of loadlab's context managers (stopped by PID on every path). All load
goes to 127.0.0.1, for a bounded time. Server and generator are pinned to different cores with
``taskset`` when the machine allows it, and every measurement carries the CPU use of the server,
the generator and the profiler, plus what the rest of the machine used meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from loadlab.config import DEMO_APP
from loadlab.instrument import LOOP_SAMPLE_ENV
from loadlab.processes import (
    LOCUST_OUTPUTS,
    LOOPBACK,
    ManagedProcess,
    ProfiledServer,
    free_port,
    locust_argv,
    uvicorn_argv,
    wait_ready,
)
from loadlab.recording import ChildRecorders, Recording, loop_by_sampler, split_recording, threads_to_ignore
from loadlab.results import read_locust_stats
from loadlab.runner import LOOP_SAMPLE_HZ

REPO = Path(__file__).resolve().parents[1]
INSTRUMENTED_APP = DEMO_APP
BARE_APP = "benchmarks.bare_app:create_app"


@dataclass(frozen=True)
class Pinning:
    """Which cores the server and the load generator run on (``None``: not pinned)."""

    server: int | None
    generator: int | None
    reason: str

    @classmethod
    def detect(cls) -> Pinning:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if shutil.which("taskset") is None:
            return cls(None, None, "taskset not found: nothing pinned")
        if len(cores) < 2:
            return cls(None, None, f"only {len(cores)} core(s) available: nothing pinned")
        return cls(cores[0], cores[1], f"taskset: server on core {cores[0]}, generator on core {cores[1]}")

    def prefix(self, core: int | None) -> list[str]:
        return ["taskset", "-c", str(core)] if core is not None else []

    def to_dict(self) -> dict[str, Any]:
        return {"server_core": self.server, "generator_core": self.generator, "how": self.reason}


@dataclass(frozen=True)
class Profiler:
    """py-spy around the server, as ``loadlab profile`` runs it, with where py-spy itself runs."""

    rate: int = 100
    nonblocking: bool = False
    native: bool = False
    on_generator_core: bool = False  # py-spy pinned to the generator's core instead of the server's
    split: bool = True  # the harness's default: children by their own recorders (loadlab.recording)
    children: bool = True  # False: the server's process only, its children not recorded at all (the floor)
    # The harness's default: the loop's stacks from the app's own sampler, py-spy at a fifth of the
    # rate without pausing (loadlab.recording.loop_by_sampler). False: py-spy samples the loop.
    loop_sampler: bool = True
    pyspy: bool = True  # False: the app's samplers alone, no py-spy at all
    # The harness's default: with the loop the sampler's, py-spy attaches once a thread besides the
    # loop runs (loadlab.recording.ThreadWatch). False: from the server's start (--pyspy-from-start).
    on_demand: bool = True


@dataclass
class RunningServer:
    url: str
    server_pid: int
    process: ProfiledServer
    recorders: ChildRecorders | None = None

    def profiler_pids(self) -> list[int]:
        """The main py-spy (once it runs: it may attach on demand) and its children's recorders
        (they start as the children appear)."""
        return self.process.profiler_pids()


@contextlib.contextmanager
def server(
    app: str,
    pin: Pinning,
    work_dir: Path,
    *,
    factory: bool = False,
    profiler: Profiler | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[RunningServer]:
    """One uvicorn server on a free port (under py-spy if ``profiler``), pinned, ready."""
    port = free_port()
    server_argv = pin.prefix(pin.server) + uvicorn_argv(app, port=port, factory=factory)
    profiler_argv = None
    recorders = None
    on_demand = False
    child_env = dict(os.environ, **(env or {}))
    if profiler is not None:
        # As `loadlab profile` runs it (runner._start_server): the app's loop sampler always, its
        # loop stacks and a slower non-pausing py-spy when the loop is the sampler's.
        core = pin.generator if profiler.on_generator_core else pin.server
        split = profiler.split and split_recording(server="uvicorn", workers=1)
        sampled = loop_by_sampler(split=split, instrument=True, native=profiler.native, asked=profiler.loop_sampler)
        on_demand = sampled and profiler.on_demand and profiler.pyspy
        plan = Recording(profiler.rate, split, sampled, profiler.native, profiler.nonblocking, on_demand)
        child_env[LOOP_SAMPLE_ENV] = str(LOOP_SAMPLE_HZ)
        child_env.update(plan.app_env())
        raw = work_dir / f"profile-{port}.raw.txt"
        if profiler.pyspy:
            profiler_argv = pin.prefix(core) + plan.pyspy_argv(raw)
            if profiler.children:
                recorders = plan.child_recorders(raw, work_dir / f"py-spy-children-{port}.log")
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), child_env.get("PYTHONPATH")]))
    with ProfiledServer(
        server_argv,
        profiler_argv=profiler_argv,
        env=child_env,
        log_path=work_dir / f"server-{port}.log",
        children=recorders,
        on_demand=on_demand,
    ) as proc:
        url = f"http://{LOOPBACK}:{port}"
        wait_ready(proc.process, url + "/health", timeout=60.0)
        pid = proc.server_pid()
        if pid is None:
            raise RuntimeError(f"the server behind py-spy did not start; see {work_dir}/server-{port}.log")
        proc.watch_threads(threads_to_ignore(url + "/debug"))  # as runner._start_target (on demand only)
        yield RunningServer(url, pid, proc, recorders)


class CpuSampler:
    """Once a second: CPU of the server's process tree, the generator's, the profiler alone, and
    of everything else on the machine — in percent of one core. The first second is dropped (it
    holds the generator's start-up)."""

    def __init__(self, server_pid: int, generator_pid: int, profilers: Callable[[], list[int]]) -> None:
        self._roots = {"server": server_pid, "generator": generator_pid}
        self._profilers = profilers
        self._procs: dict[int, psutil.Process] = {}
        self._samples: dict[str, list[float]] = {"server": [], "generator": [], "profiler": [], "other": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CpuSampler:
        self._read()  # primes psutil's per-process counters
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _percent(self, proc: psutil.Process) -> float:
        cached = self._procs.setdefault(proc.pid, proc)
        with contextlib.suppress(psutil.Error):
            return float(cached.cpu_percent(None))
        return 0.0

    def _read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, pid in self._roots.items():
            total = 0.0
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    total += self._percent(proc)
            out[key] = total
        out["profiler"] = 0.0
        for pid in self._profilers():
            with contextlib.suppress(psutil.Error):
                out["profiler"] += self._percent(psutil.Process(pid))
        machine = psutil.cpu_percent(None) * (psutil.cpu_count() or 1)
        out["other"] = max(0.0, machine - out["server"] - out["generator"] - out["profiler"])
        return out

    def _run(self) -> None:
        first = True
        while not self._stop.wait(1.0):
            point = self._read()
            if first:
                first = False
                continue
            for key, value in point.items():
                self._samples[key].append(value)

    def summary(self) -> dict[str, float | None]:
        """Median of the one-second readings, per key (``None`` when the run was too short)."""
        return {f"{k}_cpu_percent": round(statistics.median(v), 1) if v else None for k, v in self._samples.items()}


@dataclass
class QuietGate:
    """Waits, before each measurement, until the rest of the machine is quiet; bounded in total.

    Nothing of ours runs between measurements, so the CPU busy then is someone else's. The load
    average is recorded too, but it is not the gate: it still holds our own previous minute."""

    budget_s: float = 300.0
    busy_percent: float = 40.0  # of one core
    waited_s: float = 0.0
    log: list[dict[str, Any]] = field(default_factory=list)

    def wait(self, label: str) -> dict[str, Any]:
        start = time.monotonic()
        busy = _machine_busy(1.0)
        while busy > self.busy_percent and self.waited_s + (time.monotonic() - start) < self.budget_s:
            time.sleep(4.0)
            busy = _machine_busy(1.0)
        waited = time.monotonic() - start - 1.0
        self.waited_s += max(0.0, waited)
        entry = {
            "before": label,
            "loadavg_1m": round(os.getloadavg()[0], 2),
            "busy_cpu_percent": round(busy, 1),
            "waited_s": round(max(0.0, waited), 1),
            "quiet": busy <= self.busy_percent,
        }
        self.log.append(entry)
        return entry


def _machine_busy(interval: float) -> float:
    return float(psutil.cpu_percent(interval)) * (psutil.cpu_count() or 1)


def wait_for_low_load(threshold: float, budget_s: float) -> dict[str, Any]:
    """At start, before anything of ours ran: wait (bounded) for the 1-minute load average to drop."""
    start = time.monotonic()
    first = os.getloadavg()[0]
    while os.getloadavg()[0] > threshold and time.monotonic() - start < budget_s:
        time.sleep(5.0)
    last = os.getloadavg()[0]
    return {
        "loadavg_1m_at_start": round(first, 2),
        "loadavg_1m_after_wait": round(last, 2),
        "waited_s": round(time.monotonic() - start, 1),
        "threshold": threshold,
        "low": last <= threshold,
    }


def wrk_binary(install: bool) -> tuple[str | None, str]:
    """wrk on PATH; else, if allowed and possible (root with apt-get), install Debian's package."""
    found = shutil.which("wrk")
    if found:
        return found, f"found {found}"
    if not install:
        return None, "wrk is missing (install it: apt-get install wrk); the items that need it are skipped"
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "wrk is missing and cannot be installed here (needs root and apt-get); items skipped"
    try:
        subprocess.run(
            ["apt-get", "install", "-y", "wrk"], capture_output=True, timeout=180, check=True
        )  # bounded: a fresh clone's `make bench` installs it once
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"wrk is missing and `apt-get install -y wrk` failed ({exc}); items skipped"
    found = shutil.which("wrk")
    return (found, "installed with apt-get install -y wrk") if found else (None, "wrk still missing after apt-get")


_WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_LATENCY = re.compile(r"Latency\s+([\d.]+)(us|ms|s)")


def run_wrk(
    wrk: str, url: str, *, connections: int, duration: float, pin: Pinning, running: RunningServer, work_dir: Path
) -> dict[str, Any]:
    """wrk with one thread on the generator's core; requests/s, errors and everyone's CPU."""
    argv = pin.prefix(pin.generator) + [wrk, "-t", "1", "-c", str(connections), "-d", f"{duration:g}s", url]
    log = work_dir / f"wrk-{time.monotonic_ns()}.log"
    with ManagedProcess(argv, name="wrk", log_path=log) as proc:
        with CpuSampler(running.server_pid, proc.pid, running.profiler_pids) as cpu:
            _wait_bounded(proc, duration + 30)
    text = log.read_text(errors="replace")
    m = _WRK_RPS.search(text)
    if m is None:
        raise RuntimeError(f"wrk printed no Requests/sec; its output:\n{text[-800:]}")
    socket_errors = _WRK_ERRORS.search(text)
    errors = sum(int(x) for x in socket_errors.groups()) if socket_errors else 0
    bad_status = _WRK_NON2XX.search(text)
    non2xx = int(bad_status.group(1)) if bad_status else 0
    lat = _WRK_LATENCY.search(text)
    latency_ms = None
    if lat:
        latency_ms = float(lat.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[lat.group(2)]
    return {
        "generator": "wrk",
        "connections": connections,
        "duration_s": duration,
        "rps": float(m.group(1)),
        "errors": errors + non2xx,
        "latency_avg_ms": latency_ms,
        **cpu.summary(),
    }


def run_locust(
    locustfile: str,
    tag: str,
    *,
    users: int,
    duration: float,
    pin: Pinning,
    running: RunningServer,
    work_dir: Path,
    route: str,
    env: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """The harness's Locust set-up (FastHttpUser, the scenario's locustfile, the canary among the
    users, ``-u N -r N``), headless, on the generator's core; the route's requests/s."""
    prefix = work_dir / f"locust-{time.monotonic_ns()}"
    prefix.mkdir(parents=True)
    argv = pin.prefix(pin.generator) + locust_argv(
        locustfile, running.url, users=users, spawn_rate=users, run_time_s=duration, outputs=prefix, tags=[tag],
        extra=extra,
    )  # fmt: skip
    child_env = dict(os.environ, LOADLAB_HOST=running.url, **(env or {}))
    child_env["LOADLAB_THRESHOLDS_OUT"] = str(prefix / "thresholds.json")
    with ManagedProcess(argv, name="locust", env=child_env, cwd=REPO, log_path=prefix / "locust.log") as proc:
        with CpuSampler(running.server_pid, proc.pid, running.profiler_pids) as cpu:
            _wait_bounded(proc, duration + 40)
        code = proc.poll()
    rows = {r["name"]: r for r in read_locust_stats(prefix / LOCUST_OUTPUTS)}
    if route not in rows:
        tail = (prefix / "locust.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"Locust (exit {code}) reported no row for {route}; its output:\n{tail}")
    row = rows[route]
    return {
        "generator": "locust",
        "users": users,
        "duration_s": duration,
        "rps": row["rps"],
        "requests": row["requests"],
        "errors": row["failures"],
        "locust_exit_code": code,
        **cpu.summary(),
    }


def _wait_bounded(proc: ManagedProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name} did not finish within {timeout:g} s; stopped it")
        time.sleep(0.1)


def run_cli(argv: Sequence[str], *, timeout: float, log: Path) -> tuple[int | None, float]:
    """A command (``loadlab profile …``) as a managed child; its exit code and wall time."""
    start = time.monotonic()
    with ManagedProcess(argv, name=Path(argv[0]).name, cwd=REPO, log_path=log) as proc:
        _wait_bounded(proc, timeout)
        code = proc.poll()
    return code, time.monotonic() - start
