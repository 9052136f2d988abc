"""Scale-out: several server workers (uvicorn and gunicorn) and several Locust processes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import assert_all_stopped, loadlab, run_json, tiny_blocking_app

pytestmark = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="scale-out needs at least 2 cores")

CPU = {"LOADLAB_WORK": "40"}  # 40 ms of pure-Python work per request


def endpoint_rps(data: dict[str, Any]) -> float:
    return float(next(s["rps"] for s in data["stats"] if s["name"].startswith("/cpu/")))


def cpu_run(out: Path, *args: str) -> dict[str, Any]:
    # No profiler here: these runs compare throughput, and py-spy pausing 80 threads would blur it.
    result = loadlab(
        "profile", "--scenario", "cpu", "--no-profile", "--duration", "5", "--users", "5", "--out", str(out), *args,
        env=CPU,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run_json(out)


@pytest.fixture(scope="module")
def threadpool_one_worker(tmp_path_factory: pytest.TempPathFactory) -> float:
    return endpoint_rps(cpu_run(tmp_path_factory.mktemp("cpu") / "run", "-T", "threadpool"))


def test_two_workers_beat_one_on_cpu_work(threadpool_one_worker: float, tmp_path: Path) -> None:
    # Users arrive 2 a second, so their keep-alive connections spread over both workers' accept
    # loops (arriving at once, one worker's loop can take them all, and the other idles).
    data = cpu_run(tmp_path / "run", "-T", "threadpool", "--workers", "2", "--spawn-rate", "2", "--duration", "6")
    assert endpoint_rps(data) > 1.15 * threadpool_one_worker, (endpoint_rps(data), threadpool_one_worker)
    assert data["report"]["theory"][0]["users"] == 4


@pytest.mark.parametrize("server", ["uvicorn", "gunicorn"])
def test_two_workers_profiled_and_two_locust_processes(server: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = loadlab(
        "profile", "-T", "blocking-sleep", "--server", server, "--workers", "2", "--locust-processes", "2",
        "--duration", "4", "--users", "10", "--out", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = run_json(out)
    roles = [p["role"] for p in data["analysis"]["processes"]]
    assert roles.count("worker") == 2 and roles.count("master") == 1, roles
    # Each worker blocked its own loop in the same handler, and each is named.
    for worker in (p for p in data["analysis"]["processes"] if p["role"] == "worker"):
        assert worker["blockers"][0]["function"] == "blocking_sleep", worker
    # Two loop-blocking workers: the ceiling is 2 / 50 ms, and the measurement is above one worker's.
    (row,) = data["report"]["theory"]
    assert row["model"] == "loop-blocking" and row["predicted_rps"] > 30
    assert row["measured_rps"] > 25
    # Stopped cleanly: nothing had to be killed, nothing is left.
    assert data["leftover_pids"] == []
    assert_all_stopped(data["pids"])
    # Two Locust processes, their stats merged into one report.
    assert next(s for s in data["stats"] if s["name"] == "Aggregated")["requests"] > 100


def test_every_workers_loop_sampler_is_read(tmp_path: Path) -> None:
    # Several workers share one port: the loop samplers' counts of all of them, added up as the
    # profile adds their loops up. From one worker alone, a waiting blocker on the others looked
    # like code that kept the GIL (the sampler "never caught it").
    app = tiny_blocking_app(tmp_path / "theirs")
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", "shopapp:app", "--locustfile", "shopper.py", "--workers", "2", "-u", "6", "-t", "5",
        "--out", str(out), cwd=app,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = run_json(out)
    assert len(run["loop_samples"]["pids"]) == 2
    top = next(b for b in run["analysis"]["loop"]["blockers"] if b.get("file"))
    assert (top["function"], top["kind"], top["kind_from"]) == ("slow_lookup", "wait", "loop sampler"), top
