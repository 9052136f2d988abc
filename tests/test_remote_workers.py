"""Locust workers started elsewhere (``--expect-workers``), over TCP on this machine.

``loadlab profile`` runs the Locust master and prints the workers' command; the test starts them
itself, as a user would on other hosts, from the command recorded in ``run.json``.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

import pytest

from loadlab.processes import ManagedProcess, free_port
from tests.helpers import assert_all_stopped, finish, run_json, start, tiny_blocking_app, wait_for

pytestmark = pytest.mark.live


def _worker(command: str, cwd: Path, log: Path) -> ManagedProcess:
    argv = shlex.split(command)
    assert argv[0] == "locust"
    return ManagedProcess([sys.executable, "-m", "locust", *argv[1:]], name="worker", log_path=log, cwd=cwd)


def _profile(app: Path, out: Path, workers: int, wait_s: int) -> list[str]:
    args = ["--app", "shopapp:app", "--locustfile", "shopper.py", "-u", "6", "-t", "5"]
    return [*args, "--expect-workers", str(workers), "--master-port", str(free_port()), "--workers-wait", str(wait_s)]


def test_two_remote_workers_share_the_load_and_the_run_completes(tmp_path: Path) -> None:
    app = tiny_blocking_app(tmp_path / "theirs")
    out = tmp_path / "run"
    proc = start(_profile(app, out, workers=2, wait_s=60) + ["--out", str(out)], cwd=app)
    data = wait_for(out, lambda d: "locust_workers" in d)
    command = data["locust_workers"]["command"]
    assert "--worker" in command and "--master-host 127.0.0.1" in command
    workers = [_worker(command, app, tmp_path / f"worker{i}.log") for i in (1, 2)]
    time.sleep(4)  # workers on other hosts take their time: that wait must stay out of the profile
    for w in workers:
        w.start()
    try:
        stderr = finish(proc, timeout=120)
    finally:
        codes = [w.popen.wait(timeout=30) if w.popen else None for w in workers]
        for w in workers:
            w.stop()
    assert proc.returncode == 0, stderr
    assert f"start each with:\n  {command}" in stderr
    run = run_json(out)
    assert run["status"] == "complete", run.get("reason")
    assert run["locust_workers"]["missing"] == []
    total = next(s for s in run["stats"] if s["name"] == "Aggregated")
    assert total["requests"] > 20
    log = (out / "locust.log").read_text()
    assert log.count("reported as ready") == 2  # both workers carried the load
    top = next(b for b in run["analysis"]["loop"]["blockers"] if b.get("file"))
    assert (top["function"], top["kind"]) == ("slow_lookup", "wait")
    # py-spy attached when the load began, and the loop sampler's record starts there too.
    assert run["analysis"]["loop"]["busy_share"] > 0.4
    assert run["loop_samples"]["ticks"] < run["loop_samples"]["hz"] * (5 + 4)
    # Recorded as a local run is (the loop by the app, py-spy on the rest), cut to the attach too:
    # the 4 s wait for the workers is not in the loop's stacks.
    assert run["profiler"]["mode"] == "split" and run["profiler"]["loop"] == "sampler", run["profiler"]
    assert run["profiler"]["loop_seconds"] < 5 + 4, run["profiler"]
    assert codes == [0, 0]  # the master told them to quit at the end
    assert_all_stopped({**run["pids"], **{f"worker{i}": w.pid for i, w in enumerate(workers)}})


def test_a_worker_that_never_comes_fails_the_run_within_the_wait(tmp_path: Path) -> None:
    app = tiny_blocking_app(tmp_path / "theirs")
    out = tmp_path / "run"
    started = time.monotonic()
    proc = start(_profile(app, out, workers=2, wait_s=5) + ["--out", str(out)], cwd=app)
    data = wait_for(out, lambda d: "locust_workers" in d)
    worker = _worker(data["locust_workers"]["command"], app, tmp_path / "worker.log")
    with worker:
        stderr = finish(proc, timeout=90)
        worker.popen.wait(timeout=30) if worker.popen else None  # told to quit by its master
    assert proc.returncode == 1, stderr
    assert "2 Locust worker(s) were expected but 1 connected within --workers-wait" in stderr
    assert time.monotonic() - started < 60
    run = run_json(out)
    assert run["status"] == "failed"
    assert_all_stopped({**run["pids"], "worker": worker.pid})


def test_expect_workers_and_locust_processes_are_exclusive(tmp_path: Path) -> None:
    app = tiny_blocking_app(tmp_path / "theirs")
    proc = start(_profile(app, tmp_path / "run", 2, 5) + ["--locust-processes", "2"], cwd=app)
    stderr = finish(proc, timeout=60)
    assert proc.returncode == 2
    assert "--expect-workers and --locust-processes both make Locust a master" in stderr


def test_a_worker_that_vanishes_mid_run_fails_the_run(tmp_path: Path) -> None:
    app = tiny_blocking_app(tmp_path / "theirs")
    out = tmp_path / "run"
    args = _profile(app, out, workers=2, wait_s=60)
    args[args.index("-t") + 1] = "10"
    proc = start([*args, "--out", str(out)], cwd=app)
    command = wait_for(out, lambda d: "locust_workers" in d)["locust_workers"]["command"]
    workers = [_worker(command, app, tmp_path / f"worker{i}.log") for i in (1, 2)]
    try:
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60
        while "All users spawned" not in (out / "locust.log").read_text(errors="replace"):
            assert time.monotonic() < deadline, "the load never started"
            time.sleep(0.2)
        time.sleep(1)
        workers[1].popen.kill() if workers[1].popen else None  # the host of a worker goes away
        stderr = finish(proc, timeout=120)
    finally:
        for w in workers:
            w.stop()
    assert proc.returncode == 1, stderr
    run = run_json(out)
    assert run["status"] == "failed"
    assert "A Locust worker went missing during the run" in run["reason"]
    assert_all_stopped({**run["pids"], **{f"worker{i}": w.pid for i, w in enumerate(workers)}})
