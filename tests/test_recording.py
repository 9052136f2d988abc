"""How the harness records (issue 18): the loop's stacks by the app's own signal-driven sampler,
the rest of the server's process by a slower, non-pausing py-spy, and each child process by its
own recorder, only when there are children."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from loadlab import cli
from loadlab.analysis.stacks import Role, parse_raw
from loadlab.instrument import LOOP_STACKS_ENV, LoopSampler, LoopStacks, StallWatchdog, gil_futexes
from loadlab.processes import ManagedProcess, ProfiledServer, free_port, pyspy_argv, pyspy_binary, wait_ready
from loadlab.recording import (
    ChildRecorders,
    Recording,
    ThreadClocks,
    ThreadWatch,
    _Child,
    can_split,
    child_rate,
    loop_by_sampler,
    process_frame,
    process_rate,
    split_recording,
    stacks_between,
)
from tests.helpers import assert_all_stopped, loadlab, run_json

needs_pyspy = pytest.mark.skipif(pyspy_binary() is None, reason="py-spy is not installed")


def test_pyspy_argv_leaves_out_subprocesses_only_when_told() -> None:
    out = Path("/tmp/x.txt")
    assert "--subprocesses" in pyspy_argv(out)
    argv = pyspy_argv(out, subprocesses=False, nonblocking=True, rate=20, pid=7)
    assert "--subprocesses" not in argv and "--nonblocking" in argv and argv[-2:] == ["--pid", "7"]


def test_which_servers_are_split() -> None:
    # Split where a recorder may attach to a process it did not start (root here; not under Yama's
    # ptrace_scope 1 as another user, where the old recording is the right one).
    assert split_recording(server="uvicorn", workers=1) == can_split()  # py-spy attached at start or later
    assert not split_recording(server="uvicorn", workers=2)  # the loops are children
    assert not split_recording(server="gunicorn", workers=1)  # gunicorn's worker is a child
    assert child_rate(100) == 10 and child_rate(50) == 5 and child_rate(3) == 1


def test_merge_prefixes_the_server_and_scales_a_childs_counts(tmp_path: Path) -> None:
    main = tmp_path / "profile.raw.txt"
    main.write_text("thread (0x10): MainThread;serve (app.py:3) 40\n")
    child_out = tmp_path / ".profile.child-12.txt"
    child_out.write_text("thread (0x20): MainThread;work (app.py:9) 7\n")
    rec = ChildRecorders(main, 100, tmp_path / "log")
    rec.server = (11, "python -m uvicorn app:app")
    chain = [process_frame(11, "python -m uvicorn app:app"), process_frame(12, "python -c spawn")]
    rec.children[12] = _Child(12, "python -c spawn", chain, child_out, ManagedProcess(["true"], name="x"), exit_code=0)
    summary = rec.merge_into(main)
    lines = main.read_text().splitlines()
    assert lines[0] == 'process 11:"python -m uvicorn app:app";thread (0x10): MainThread;serve (app.py:3) 40'
    assert lines[1].endswith(";work (app.py:9) 70"), lines[1]  # 7 samples at 10 Hz count as 70 at 100 Hz
    assert summary["children"] == [
        {"pid": 12, "command": "python -c spawn", "samples": 7, "exit_code": 0, "rate_reached": 10}
    ]  # its recording's span unknown here: the rate asked for
    assert summary["children_rate"] == 10 and not child_out.exists()
    profile = parse_raw(lines)
    child = next(t for t in profile.threads.values() if t.key.pid == 12)
    assert child.parent_pid == 11 and child.samples == 70


def _loop_recorders(tmp_path: Path, stacks: dict[str, object] | None) -> tuple[ChildRecorders, Path]:
    main = tmp_path / "profile.raw.txt"
    main.write_text(
        "thread (11): MainThread;run (loop.py:1);serve (app.py:3) 4\n"  # py-spy's own look at the loop
        "thread (12): AnyIO worker 0;work (app.py:9) 3\n"
    )
    rec = ChildRecorders(main, 100, tmp_path / "log", process_rate=process_rate(100))
    rec.server = (11, "python -m uvicorn app:app")
    rec.loop_stacks = stacks
    return rec, main


def test_the_apps_loop_stacks_replace_pyspys_samples_of_the_loop(tmp_path: Path) -> None:
    stacks = {
        "native_tid": 11, "thread_name": "MainThread", "hz": 200.0, "seconds": 0.5,
        "stacks": [["run (loop.py:1);serve (app.py:3)", 38], ["run (loop.py:1);select (selectors.py:5)", 60]],
    }  # fmt: skip
    rec, main = _loop_recorders(tmp_path, stacks)
    summary = rec.merge_into(main)
    prefix = 'process 11:"python -m uvicorn app:app"'
    assert main.read_text().splitlines() == [
        f"{prefix};thread (12): AnyIO worker 0;work (app.py:9) 15",  # 3 samples at 20 Hz are 15 at 100 Hz
        f"{prefix};thread (11): MainThread;run (loop.py:1);serve (app.py:3) 19",  # 38 at 200 Hz
        f"{prefix};thread (11): MainThread;run (loop.py:1);select (selectors.py:5) 30",
    ]
    assert summary["loop"] == "sampler" and summary["rate"] == 20 and summary["loop_rate"] == 200.0
    assert summary["nonblocking"] is True


def test_counts_are_scaled_by_the_rate_pyspy_reached(tmp_path: Path) -> None:
    # py-spy draws its intervals at random: over 5 s at 20 Hz it may take 120 samples, not 100.
    # A count then means 1/24 s, and a worker seen in 60 of them was busy 2.5 s, not 3 s.
    stacks = {"native_tid": 11, "thread_name": "MainThread", "hz": 100.0, "seconds": 5.0,
              "stacks": [["run (loop.py:1);select (selectors.py:5)", 500]]}  # fmt: skip
    rec, main = _loop_recorders(tmp_path, stacks)
    main.write_text(
        "thread (11): MainThread;run (loop.py:1);serve (app.py:3) 100\n"  # the main thread: in every sample
        "thread (11): MainThread;run (loop.py:1);select (selectors.py:5) 20\n"
        "thread (12): AnyIO worker 0;work (app.py:9) 60\n"
    )
    rec.main_started, rec.main_stopped = 100.0, 105.0
    child_out = tmp_path / ".profile.child-13.txt"
    child_out.write_text("thread (13): MainThread;work (pool.py:2) 40\nthread (13): MainThread;get (queues.py:1) 20\n")
    chain = [process_frame(11, "python -m uvicorn app:app"), process_frame(13, "python -c spawn")]
    recorder = ManagedProcess(["true"], name="x")
    rec.children[13] = _Child(13, "python -c spawn", chain, child_out, recorder, started=100.0, stopped=108.0)
    summary = rec.merge_into(main)
    lines = main.read_text().splitlines()
    assert summary["rate_reached"] == 24.0 and lines[0].endswith("AnyIO worker 0;work (app.py:9) 250"), lines
    assert summary["children"][0]["rate_reached"] == 7.5  # 60 samples in 8 s at 10 Hz asked
    assert any(line.endswith("work (pool.py:2) 533") for line in lines), lines  # 40 / 7.5 Hz = 5.33 s
    # A count nowhere near the rate asked for (a span misread) is not trusted: the rate asked for.
    (tmp_path / "b").mkdir()
    rec2, main2 = _loop_recorders(tmp_path / "b", stacks)
    rec2.main_started, rec2.main_stopped = 100.0, 200.0  # 4 loop samples in 100 s: 0.04 Hz
    assert rec2.merge_into(main2)["rate_reached"] == 20


def test_without_the_apps_stacks_pyspys_loop_is_kept_and_said(tmp_path: Path) -> None:
    rec, main = _loop_recorders(tmp_path, {"hz": 0, "stacks": []})  # LOADLAB_LOOP_STACKS_HZ=0, or no answer
    summary = rec.merge_into(main)
    assert "thread (11): MainThread;run (loop.py:1);serve (app.py:3) 20" in main.read_text()
    assert summary["loop"] == "py-spy" and "did not answer" in summary["loop_note"]
    assert loop_by_sampler(split=True, instrument=True, native=False, asked=True)
    assert not loop_by_sampler(split=True, instrument=True, native=False, asked=False)  # --loop-by-pyspy
    assert not loop_by_sampler(split=True, instrument=True, native=True, asked=True)  # C frames need the pause
    assert not loop_by_sampler(split=True, instrument=False, native=False, asked=True)  # no sampler in the app
    assert not loop_by_sampler(split=False, instrument=True, native=False, asked=True)  # workers: loops are children


@pytest.mark.parametrize(
    ("args", "env", "by_app"),
    [([], {}, True), (["--loop-by-pyspy"], {}, False), ([], {"LOADLAB_LOOP_BY_APP": "0"}, False),
     (["--loop-by-app"], {"LOADLAB_LOOP_BY_APP": "0"}, True)],
)  # fmt: skip
def test_the_loop_is_the_apps_by_default_and_pyspys_when_asked(
    args: list[str], env: dict[str, str], by_app: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = cli.profile.make_context("profile", args)
    plan = Recording.of(cli._target_config(ctx.params))
    assert plan.loop_by_app is by_app
    argv = plan.pyspy_argv(Path("/tmp/x.txt"))
    rate = argv[argv.index("--rate") + 1]
    assert (rate, "--nonblocking" in argv) == (("20", True) if by_app else ("100", False)), argv


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _nap(seconds: float) -> None:
    time.sleep(seconds)


def _c_holding_the_gil(seconds: float) -> None:
    # C calls that keep the GIL for milliseconds (a regex that backtracks): Python runs no
    # bytecode, and so no signal handler, until each returns.
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        re.fullmatch(r"(a|aa)*b", "a" * 22)


def _shares(snapshot: dict[str, object]) -> dict[str, float]:
    total = 0.0
    by: dict[str, float] = {}
    for text, count in snapshot["stacks"]:  # type: ignore[attr-defined]
        total += count
        for name in ("_spin", "_nap", "_c_holding_the_gil"):
            if f";{name} (" in text:
                by[name] = by.get(name, 0.0) + count
    return {k: v / total for k, v in by.items()}


def test_one_tests_loop_stacks_are_the_sessions_since_its_start() -> None:
    before = {"pid": 7, "seconds": 10.0, "stacks": [["a;b", 40], ["a;c", 5]]}
    now = {"pid": 7, "seconds": 14.5, "stacks": [["a;b", 100], ["a;c", 5], ["a;d", 3]]}
    assert stacks_between(before, now) == {"pid": 7, "seconds": 4.5, "stacks": [["a;b", 60], ["a;d", 3]]}
    restarted = {"pid": 8, "seconds": 2.0, "stacks": [["a;b", 9]]}
    assert stacks_between(before, restarted) == restarted  # another server: all of it is this test's
    assert stacks_between(None, now) == now and stacks_between(before, None) is None


@pytest.mark.timeout(60, method="thread")  # pytest-timeout's signal method would own SIGALRM
def test_loop_stacks_see_the_main_thread_where_it_is() -> None:
    stacks = LoopStacks(200)
    assert stacks.start(), stacks.unavailable
    try:
        for _ in range(3):
            _spin(0.1)
            _nap(0.1)
            _c_holding_the_gil(0.1)
    finally:
        stacks.stop()
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL  # given back
    snap = stacks.snapshot()
    shares = _shares(snap)
    # A third each: computing, sleeping, and C code the handler waits for (its look counts the wait).
    for name in ("_spin", "_nap", "_c_holding_the_gil"):
        assert 0.2 < shares.get(name, 0.0) < 0.47, (name, shares, snap["looks"])
    # Each frame's line is where it was (read from its instruction when the snapshot is written).
    sleeping = f"_nap ({__file__}:{_nap.__code__.co_firstlineno + 1})"
    assert any(text.endswith(sleeping) for text, _ in snap["stacks"]), snap["stacks"][:3]  # type: ignore[attr-defined]
    assert 0.8 < sum(c for _, c in snap["stacks"]) / (snap["seconds"] * 200) < 1.25  # type: ignore[attr-defined,operator]


@contextlib.contextmanager
def _idle_loop() -> Iterator[tuple[asyncio.AbstractEventLoop, int, int]]:
    """An asyncio loop running idle in a thread: the loop, the thread's ident and native id."""
    loop = asyncio.new_event_loop()
    ids: list[int] = []

    def run() -> None:
        ids.extend([threading.get_ident(), threading.get_native_id()])
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while len(ids) < 2:
        time.sleep(0.01)
    time.sleep(0.05)  # in its selector
    try:
        yield loop, ids[0], ids[1]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_the_loop_sampler_rides_the_stall_watchdogs_thread() -> None:
    # One thread that wakes every 10 ms for both, not two: each wake-up costs the process CPU of
    # its own, and py-spy reads every thread at each of its samples.
    probe = types.SimpleNamespace(last_beat=time.monotonic())  # a heartbeat it reads, no stall
    with _idle_loop() as (loop, ident, native_id):
        slow = StallWatchdog(probe, loop, ident, stall_ms=60_000)  # type: ignore[arg-type]
        slow.poll_s = 0.05  # wakes less often than the sampler must look: it keeps a thread of its own
        spare = LoopSampler(loop, ident, native_id, hz=100)
        assert not spare.ride(slow) and not slow.passengers
        spare.stop()
        watchdog = StallWatchdog(probe, loop, ident, stall_ms=60_000)  # type: ignore[arg-type]
        sampler = LoopSampler(loop, ident, native_id, hz=100)
        assert sampler.ride(watchdog)
        watchdog.start()
        try:
            time.sleep(0.6)
        finally:
            watchdog.stop()
            sampler.stop()
    assert sampler._thread.ident is None  # never started a thread of its own
    assert sampler.gil_futexes and 20 <= sampler.ticks <= 70, sampler.ticks  # ~100 Hz after its 0.1 s calibration


def test_an_idle_loops_looks_read_no_proc_file_unless_others_compute() -> None:
    # An idle loop, parked in its selector: a look only counts it outside the app, and asks its
    # /proc files whether it waits for the GIL only when other threads computed meanwhile.
    with _idle_loop() as (loop, ident, native_id):
        sampler = LoopSampler(loop, ident, native_id, hz=100)
        sampler.gil_futexes = gil_futexes()
        reads: list[str] = []
        real = sampler._files.read

        def counted(name: str) -> bytes:
            reads.append(name)
            return real(name)

        sampler._files.read = counted  # type: ignore[method-assign]
        done = threading.Event()

        def spin() -> None:
            while not done.is_set():
                pass

        try:
            for _ in range(20):
                sampler.sample()
                time.sleep(0.005)
            assert sampler.outside_app == sampler.ticks == 20 and reads == [], reads
            threading.Thread(target=spin, daemon=True).start()
            for _ in range(20):
                sampler.sample()
                time.sleep(0.005)
            assert "stat" in reads and sampler.gil_ticks == 0, (reads, sampler.gil_ticks)  # in epoll, not the GIL
        finally:
            done.set()
            sampler.stop()


@pytest.mark.timeout(60, method="thread")
def test_a_sleeping_loop_woken_by_the_stacks_alarm_is_not_read_as_computing() -> None:
    # The alarm wakes a sleeping loop, which then waits for the GIL the loop sampler holds while
    # it looks, as a computing loop would (seen in CI: a time.sleep offered to a process pool).
    # Each look here keeps the GIL 3 ms, so about a third of them meet an alarm.
    stacks = LoopStacks(100)
    sampler = LoopSampler(None, threading.get_ident(), threading.get_native_id(), hz=100)  # type: ignore[arg-type]
    sampler.gil_futexes = gil_futexes()
    sampler.stacks = stacks
    read = sampler._loop_cpu_ns

    def slow_read() -> int:
        _spin(0.003)
        return read()

    sampler._loop_cpu_ns = slow_read  # type: ignore[method-assign]
    done = threading.Event()

    def look() -> None:
        while not done.is_set():
            sampler.sample()
            time.sleep(0.004)

    assert stacks.start(), stacks.unavailable
    looker = threading.Thread(target=look, daemon=True)
    looker.start()
    try:
        _nap(1.5)
    finally:
        done.set()
        looker.join(5)
        stacks.stop()
        sampler.stop()
    cpu, wait, gil = (sum(c[i] for c in sampler.counts.values()) for i in range(3))
    assert sampler.alarm_ticks >= 10, (sampler.alarm_ticks, sampler.ticks)
    assert cpu + gil <= 0.05 * (cpu + wait + gil), (cpu, wait, gil, sampler.alarm_ticks)


def test_a_process_that_never_stops_its_loop_stacks_still_exits_by_itself(tmp_path: Path) -> None:
    # No lifespan shutdown (a crash, --lifespan off): the timer must not outlive Python's handler.
    script = "import time; from loadlab.instrument import LoopStacks; LoopStacks(500).start(); time.sleep(0.2)"
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1], timeout=30)
    assert done.returncode == 0


@pytest.mark.timeout(60, method="thread")
def test_loop_stacks_leave_an_apps_own_alarm_alone() -> None:
    previous = signal.signal(signal.SIGALRM, lambda *_: None)
    try:
        stacks = LoopStacks(100)
        assert not stacks.start() and "SIGALRM" in (stacks.unavailable or "")
        assert stacks.snapshot()["stacks"] == []
    finally:
        signal.signal(signal.SIGALRM, previous)


PARENT = textwrap.dedent(
    """
    import multiprocessing, sys, time
    def sleep():
        time.sleep(60)
    if __name__ == "__main__":
        if sys.argv[1] == "1":
            multiprocessing.get_context("spawn").Process(target=sleep, daemon=True).start()
        sleep()
    """
)


@needs_pyspy
@pytest.mark.parametrize("children", [0, 1])
def test_a_recorder_per_child_and_none_without_children(children: int, tmp_path: Path) -> None:
    (tmp_path / "parent.py").write_text(PARENT)
    with ManagedProcess([sys.executable, "parent.py", str(children)], name="parent", cwd=tmp_path) as parent:
        deadline = time.monotonic() + 20
        while len(psutil.Process(parent.pid).children()) < children and time.monotonic() < deadline:
            time.sleep(0.1)
        rec = ChildRecorders(tmp_path / "profile.raw.txt", 100, tmp_path / "children.log")
        rec.watch(lambda: parent.pid)
        time.sleep(3.0)  # the child is old enough, found, attached and sampled
        rec.stop()
    if not children:
        assert rec.children == {}  # nothing to sample, no recorder
        return
    # The spawned child; not multiprocessing's resource tracker, which spawning starts too.
    assert any("spawn_main" in c.command for c in rec.children.values()), rec.children
    assert not any("resource_tracker" in c.command for c in rec.children.values()), rec.children
    for child in rec.children.values():
        assert child.exit_code == 0, (tmp_path / "children.log").read_text()
        assert "--nonblocking" in child.recorder.argv and "--subprocesses" not in child.recorder.argv
        assert child.output.read_text().strip(), f"the recorder of {child.command} wrote nothing"
        assert_all_stopped({"recorder": child.recorder.pid})


APP = textwrap.dedent(
    """
    import asyncio, contextlib, multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from fastapi import FastAPI

    def crunch(n: int) -> int:
        return sum(i * i for i in range(n))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        app.state.pool.submit(crunch, 1).result()
        yield
        app.state.pool.shutdown()

    app = FastAPI(lifespan=lifespan)

    @app.get("/crunch")
    async def crunch_route() -> dict:
        loop = asyncio.get_running_loop()
        return {"n": await loop.run_in_executor(app.state.pool, crunch, 200_000)}

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}
    """
)
LOCUSTFILE = textwrap.dedent(
    """
    from locust import HttpUser, task, constant
    class U(HttpUser):
        wait_time = constant(0)
        @task
        def crunch(self):
            self.client.get("/crunch")
    """
)


@needs_pyspy
def test_a_process_pools_workers_are_recorded_apart_and_still_analysed(tmp_path: Path) -> None:
    (tmp_path / "poolapp.py").write_text(APP)
    (tmp_path / "locustfile.py").write_text(LOCUSTFILE)
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", "poolapp:app", "--locustfile", "locustfile.py", "-u", "2", "-t", "4", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = run_json(out)
    profiler = data["profiler"]
    assert profiler["mode"] == "split" and profiler["children_rate"] == 10
    assert profiler["loop"] == "sampler" and profiler["rate"] == 20 and profiler["nonblocking"], profiler  # the default
    sampled = [c for c in profiler["children"] if c["samples"] > 0]
    assert len(sampled) >= 2, profiler  # the two pool workers
    assert all(c["exit_code"] == 0 for c in profiler["children"]), profiler
    pool = {t["pid"] for t in data["analysis"]["threads"] if t["role"] == Role.POOL_CHILD.value}
    assert len(pool) >= 2, data["analysis"]["threads"]
    profile = parse_raw((out / "profile.raw.txt").read_text().splitlines())
    crunching = {s.thread.pid for s in profile.stacks if any(f.name == "crunch" for f in s.frames)}
    assert crunching and crunching <= pool, (crunching, pool)  # the work is seen where it ran
    assert_all_stopped(data["pids"])
    assert any(k.startswith("profiler_of_child_") for k in data["pids"])


AGREEING_APP = textwrap.dedent(
    """
    import re, time
    from fastapi import FastAPI
    from loadlab.instrument import instrument

    api = FastAPI()

    def spin(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    def regex(seconds):
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            re.fullmatch(r"(a|aa)*b", "a" * 22)  # C that keeps the GIL for a few ms

    @api.get("/spin")
    async def spin_route():
        spin(0.004)

    @api.get("/nap")
    async def nap_route():
        time.sleep(0.004)

    @api.get("/regex")
    async def regex_route():
        regex(0.004)

    app = instrument(api)
    """
)


def _loop_shares(lines: list[str], names: tuple[str, ...]) -> dict[str, float]:
    counts = dict.fromkeys(names, 0)
    total = 0
    for line in lines:
        body, _, count = line.rpartition(" ")
        total += int(count)
        leaf_side = body.split(";")
        for name in names:
            if any(f.startswith(f"{name} (") for f in leaf_side):
                counts[name] += int(count)
    return {k: v / total for k, v in counts.items()}


@needs_pyspy
@pytest.mark.live
def test_the_apps_loop_stacks_agree_with_a_pausing_pyspy(tmp_path: Path) -> None:
    """The same server, recorded at once by py-spy pausing it (the exact way, and the default
    before) and by the app's sampler: the loop's time per function agrees."""
    (tmp_path / "agreeing.py").write_text(AGREEING_APP)
    port = free_port()
    out = tmp_path / "spy.raw.txt"
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}:{Path(__file__).resolve().parents[1]}")
    env[LOOP_STACKS_ENV] = "100"
    server_argv = [sys.executable, "-m", "uvicorn", "agreeing:app", "--port", str(port), "--no-access-log"]
    base = f"http://127.0.0.1:{port}"
    with ProfiledServer(
        server_argv, profiler_argv=pyspy_argv(out, rate=100, subprocesses=False), env=env, log_path=tmp_path / "s.log"
    ) as server:
        wait_ready(server.process, base + "/nap", timeout=30)
        with httpx.Client(base_url=base, timeout=10) as client:
            end = time.monotonic() + 5.0
            while time.monotonic() < end:  # bounded by time; one request at a time, each route in turn
                for path in ("/spin", "/nap", "/regex"):
                    client.get(path).raise_for_status()
            stacks = client.get("/debug/stacks").json()
        pid = server.server_pid()
    names = ("spin", "nap_route", "regex")
    ours = _loop_shares([f"{text} {count}" for text, count in stacks["stacks"]], names)
    spy_lines = [ln for ln in out.read_text().splitlines() if ln.startswith(f"thread ({pid})")]
    theirs = _loop_shares(spy_lines, names)
    assert stacks["looks"] > 300, stacks["looks"]
    for name in names:  # each about a quarter of the loop's time (the rest: parked, and the framework)
        assert theirs[name] > 0.1, (name, theirs)
        assert abs(ours[name] - theirs[name]) < 0.3 * theirs[name] + 0.06, (name, ours, theirs)


THREADS = textwrap.dedent(
    """
    import json, sys, threading, time
    go = threading.Event()
    def ticker():  # wakes all the time, as loadlab's watchdog does: left out by the watch
        while True:
            time.sleep(0.01)
    def worker():  # idle until told, as a pool's thread is
        go.wait()
        sum(range(10_000))
        time.sleep(60)
    tick = threading.Thread(target=ticker, daemon=True)
    work = threading.Thread(target=worker, daemon=True)
    tick.start(); work.start()
    time.sleep(0.2)
    ids = {"main": threading.get_native_id(), "ticker": tick.native_id, "worker": work.native_id}
    print(json.dumps(ids), flush=True)
    line = sys.stdin.readline().strip()
    if line == "wake":
        go.set()
    elif line == "spawn":
        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
    time.sleep(60)
    """
)


@pytest.mark.parametrize("how", ["wake", "spawn"])
def test_the_watch_starts_pyspy_only_once_a_thread_besides_the_left_out_ones_runs(how: str, tmp_path: Path) -> None:
    (tmp_path / "threads.py").write_text(THREADS)
    proc = subprocess.Popen(
        [sys.executable, "threads.py"], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    fired = threading.Event()
    try:
        assert proc.stdout is not None and proc.stdin is not None
        tids = json.loads(proc.stdout.readline())
        watch = ThreadWatch(proc.pid, frozenset({tids["main"], tids["ticker"]}), fired.set, every_s=0.02)
        watch.watch()
        try:
            assert not fired.wait(1.0), "fired while only the left-out threads ran"  # the ticker woke ~100 times
            proc.stdin.write(how + "\n")
            proc.stdin.flush()
            assert fired.wait(5.0), "not fired when another thread ran"
            assert watch.fired is not None and watch.began is not None and watch.fired > watch.began
            if how == "wake":
                assert watch.thread_id == tids["worker"]
            else:
                assert watch.thread_id not in set(tids.values())  # the new thread
        finally:
            watch.stop()
        assert not watch._thread.is_alive()
    finally:
        proc.kill()
        proc.wait()


def test_thread_clocks_see_a_thread_run_and_close_ended_threads_files() -> None:
    done = threading.Event()
    thread = threading.Thread(target=lambda: (sum(range(200_000)), done.wait()), daemon=True)
    clocks = ThreadClocks(os.getpid())
    try:
        before = clocks.read()
        thread.start()
        time.sleep(0.2)
        after = clocks.read()
        assert thread.native_id in after and thread.native_id not in before
        assert after[thread.native_id] > 0
        done.set()
        thread.join()
        deadline = time.monotonic() + 5  # the OS thread outlives join() by a moment
        while thread.native_id in clocks.read() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert thread.native_id not in clocks.read() and thread.native_id not in clocks._fds
    finally:
        clocks.close()


def test_an_on_demand_pyspy_that_never_started_leaves_the_loop_stacks_as_the_profile(tmp_path: Path) -> None:
    main = tmp_path / "profile.raw.txt"  # py-spy never ran: no file of its own
    rec = ChildRecorders(main, 100, tmp_path / "log", process_rate=process_rate(100), on_demand=True)
    rec.server = (11, "python -m uvicorn app:app")
    rec.loop_stacks = {
        "native_tid": 11, "thread_name": "MainThread", "hz": 100.0, "seconds": 1.0,
        "stacks": [["run (loop.py:1);handler (app.py:3)", 40], ["run (loop.py:1);select (selectors.py:5)", 60]],
    }  # fmt: skip
    summary = rec.merge_into(main)
    prefix = 'process 11:"python -m uvicorn app:app"'
    assert main.read_text().splitlines() == [
        f"{prefix};thread (11): MainThread;run (loop.py:1);handler (app.py:3) 40",
        f"{prefix};thread (11): MainThread;run (loop.py:1);select (selectors.py:5) 60",
    ]
    assert summary["loop"] == "sampler" and summary["rate_reached"] is None
    # Not on demand (or started and it wrote nothing): no profile, and the run says so.
    main.unlink()
    rec.on_demand = False
    assert "loop" not in rec.merge_into(main) and not main.exists()


ON_DEMAND_APP = textwrap.dedent(
    """
    import time
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/blocks")
    async def blocks() -> dict:
        time.sleep(0.005)  # blocks the loop: found by the app's own sampler alone
        return {}

    @app.get("/threaded")
    def threaded() -> dict:
        time.sleep(0.01)  # in AnyIO's threadpool: py-spy's to record
        return {}

    @app.get("/health")
    async def health() -> dict:
        return {}
    """
)
ON_DEMAND_LOCUSTFILE = textwrap.dedent(
    """
    from locust import HttpUser, constant, tag, task
    class U(HttpUser):
        wait_time = constant(0.01)
        @tag("blocks")
        @task
        def blocks(self):
            self.client.get("/blocks")
        @tag("threaded")
        @task
        def threaded(self):
            self.client.get("/threaded")
    """
)


@needs_pyspy
def test_pyspy_attaches_only_when_a_thread_besides_the_loop_runs(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(ON_DEMAND_APP)
    (tmp_path / "locustfile.py").write_text(ON_DEMAND_LOCUSTFILE)
    runs = {}
    for tag in ("blocks", "threaded"):
        result = loadlab(
            "profile", "--app", "app:app", "--locustfile", "locustfile.py", "-T", tag, "-u", "4", "-t", "3",
            "--out", str(tmp_path / tag), cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        runs[tag] = run_json(tmp_path / tag)
        assert_all_stopped(runs[tag]["pids"])
    # Only the loop ran: no py-spy at all, and the app's loop stacks are the whole profile.
    alone = runs["blocks"]
    assert alone["profiler"]["on_demand"] == {"started": False, "after_s": None, "thread": None}, alone["profiler"]
    assert "profiler" not in alone["pids"] and not alone.get("profile_error")
    assert alone["status"] == "complete", alone.get("reason")
    assert alone["analysis"]["loop"]["blockers"][0]["function"] == "blocks"
    lines = (tmp_path / "blocks" / "profile.raw.txt").read_text().splitlines()
    assert lines and all("MainThread" in line for line in lines)
    report = (tmp_path / "blocks" / "report.md").read_text()
    assert "py-spy never needed: no thread but the loop ran" in report
    assert "only the loop ran, so py-spy never started" in (tmp_path / "blocks" / "flamegraph.svg").read_text()
    # A def route: py-spy attached when its first thread ran, and the threadpool view has it.
    pooled = runs["threaded"]
    on_demand = pooled["profiler"]["on_demand"]
    assert on_demand["started"] and on_demand["after_s"] is not None and on_demand["thread"], on_demand
    assert pooled["pids"]["profiler"] and pooled["profiler"]["rate_reached"], pooled["profiler"]
    workers = {f["function"]: f for f in pooled["analysis"]["threadpool"]["by_function"]}
    assert "threaded" in workers and workers["threaded"]["average_busy_workers"] > 0, workers


WAKING_CHILD = textwrap.dedent(
    """
    import multiprocessing, sys, time
    def child(conn):
        conn.recv()  # idle until the parent says, as a pool's worker waits for a task
        end = time.perf_counter() + 2.0
        while time.perf_counter() < end:
            pass
        time.sleep(60)
    if __name__ == "__main__":
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        multiprocessing.get_context("spawn").Process(target=child, args=(theirs,), daemon=True).start()
        sys.stdin.readline()
        ours.send(1)
        time.sleep(60)
    """
)


@needs_pyspy
def test_on_demand_a_child_gets_its_recorder_only_once_it_runs(tmp_path: Path) -> None:
    (tmp_path / "parent.py").write_text(WAKING_CHILD)
    parent = subprocess.Popen([sys.executable, "parent.py"], cwd=tmp_path, stdin=subprocess.PIPE, text=True)
    rec = ChildRecorders(tmp_path / "profile.raw.txt", 100, tmp_path / "children.log", on_demand=True)
    try:
        deadline = time.monotonic() + 20
        while not psutil.Process(parent.pid).children() and time.monotonic() < deadline:
            time.sleep(0.1)
        rec.watch(lambda: parent.pid)
        time.sleep(2.0)  # found (older than half a second), and idle all along
        assert rec.children == {} and len(rec._idle) == 1, (rec.children, rec._idle)
        assert parent.stdin is not None
        parent.stdin.write("go\n")
        parent.stdin.flush()
        deadline = time.monotonic() + 5
        while not rec.children and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(rec.children) == 1 and rec._idle == {}
        time.sleep(1.0)  # sampled while it computes
    finally:
        rec.stop()
        parent.kill()
        parent.wait()
    (child,) = rec.children.values()
    assert child.exit_code == 0, (tmp_path / "children.log").read_text()
    assert "child" in child.output.read_text()  # its spinning function, recorded
