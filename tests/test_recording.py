"""How the harness records (issue 18): the server's own process by py-spy at the loop's rate, and
each child process by its own slower, non-pausing recorder, only when there are children."""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from loadlab.analysis.stacks import Role, parse_raw
from loadlab.processes import ManagedProcess, pyspy_argv, pyspy_binary
from loadlab.recording import ChildRecorders, _Child, child_rate, process_frame, split_recording
from tests.helpers import assert_all_stopped, loadlab, run_json

needs_pyspy = pytest.mark.skipif(pyspy_binary() is None, reason="py-spy is not installed")


def test_pyspy_argv_leaves_out_subprocesses_only_when_told() -> None:
    out = Path("/tmp/x.txt")
    assert "--subprocesses" in pyspy_argv(out)
    argv = pyspy_argv(out, subprocesses=False, nonblocking=True, rate=20, pid=7)
    assert "--subprocesses" not in argv and "--nonblocking" in argv and argv[-2:] == ["--pid", "7"]


def test_which_servers_are_split() -> None:
    assert split_recording(server="uvicorn", workers=1, attach=False)  # this machine runs as root
    assert not split_recording(server="uvicorn", workers=2, attach=False)  # the loops are children
    assert not split_recording(server="gunicorn", workers=1, attach=False)  # gunicorn's worker is a child
    assert not split_recording(server="uvicorn", workers=1, attach=True)  # remote Locust workers: attached later
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
    assert summary["children"] == [{"pid": 12, "command": "python -c spawn", "samples": 7, "exit_code": 0}]
    assert summary["children_rate"] == 10 and not child_out.exists()
    profile = parse_raw(lines)
    child = next(t for t in profile.threads.values() if t.key.pid == 12)
    assert child.parent_pid == 11 and child.samples == 70


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
    # The spawned child, and multiprocessing's resource tracker that spawning starts too.
    assert any("spawn_main" in c.command for c in rec.children.values()), rec.children
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
    sampled = [c for c in profiler["children"] if c["samples"] > 0]
    assert len(sampled) >= 2, profiler  # the two pool workers (and multiprocessing's resource tracker)
    assert all(c["exit_code"] == 0 for c in profiler["children"]), profiler
    pool = {t["pid"] for t in data["analysis"]["threads"] if t["role"] == Role.POOL_CHILD.value}
    assert len(pool) >= 2, data["analysis"]["threads"]
    profile = parse_raw((out / "profile.raw.txt").read_text().splitlines())
    crunching = {s.thread.pid for s in profile.stacks if any(f.name == "crunch" for f in s.frames)}
    assert crunching and crunching <= pool, (crunching, pool)  # the work is seen where it ran
    assert_all_stopped(data["pids"])
    assert any(k.startswith("profiler_of_child_") for k in data["pids"])
