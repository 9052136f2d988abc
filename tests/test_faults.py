"""What happens when things go wrong: interrupts at each phase, a crashing app, missing tools,
bad input, and output that must never be lost or half-written. Every test is bounded in time."""

from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, assert_all_stopped, finish, kill_mid_load, loadlab, run_json, start, wait_for

# An app that takes a while to import, so "waiting for readiness" lasts long enough to interrupt.
SLOW_APP = """
import time
from fastapi import FastAPI

time.sleep(30)
app = FastAPI()
"""

CRASHING_IMPORT = """
raise RuntimeError("the database URL is not set")
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_waiting_for_readiness(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "slowapp.py").write_text(textwrap.dedent(SLOW_APP))
    out = tmp_path / "run"
    proc = start(
        ["--app", "slowapp:app", "--locustfile", str(REPO / "loadtests/trivial_routes.py"), "--out", str(out)],
        cwd=tmp_path,
    )
    data = wait_for(out, lambda d: d["phase"] == "ready" and d["pids"].get("server"))
    time.sleep(0.5)
    proc.send_signal(sig)
    stderr = finish(proc)
    assert proc.returncode == 130, stderr
    data = run_json(out)
    assert (data["status"], data["phase"]) == ("incomplete", "ready")
    assert_all_stopped(data["pids"])


def test_sigterm_while_stopping_or_rendering_still_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(["-T", "blocking-sleep", "--duration", "2", "--users", "3", "--out", str(out)])
    data = wait_for(out, lambda d: d["phase"] in ("stopping", "rendering"))
    proc.send_signal(signal.SIGTERM)
    finish(proc)
    data = run_json(out)
    assert data["status"] in ("incomplete", "complete")  # the signal may land after the last step
    if data["status"] == "incomplete":
        assert data["phase"] in ("stopping", "rendering")
    assert_all_stopped(data["pids"])


def test_app_crash_under_load_fails_the_run_and_keeps_the_profile(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, stderr, data = kill_mid_load("server", ["-T", "async-sleep", "--duration", "30"], out)
    assert code == 1, stderr
    assert data["status"] == "failed"
    assert "the server exited" in data["reason"]
    assert_all_stopped(data["pids"])  # Locust, py-spy and the stub were stopped too
    assert (out / "profile.raw.txt").stat().st_size > 0  # py-spy wrote what it had
    assert data["analysis"]["loop"]["samples"] > 0  # and it was analysed
    # An async route: no py-spy ever attached, and the loop's stacks are the copy kept during the load.
    assert data["profiler"]["on_demand"]["started"] is False and data["profiler"]["loop_copy"], data["profiler"]


def test_app_import_error_is_reported_with_its_own_message(tmp_path: Path) -> None:
    (tmp_path / "brokenapp.py").write_text(CRASHING_IMPORT)
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", "brokenapp:app", "--locustfile", str(REPO / "loadtests/trivial_routes.py"),
        "--out", str(out), cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "the database URL is not set" in result.stderr
    assert "Traceback" not in result.stderr.splitlines()[0]
    assert run_json(out)["status"] == "failed"


def test_missing_py_spy_says_what_to_do_and_no_profile_still_works(tmp_path: Path) -> None:
    env = {"LOADLAB_PYSPY": str(tmp_path / "no-such-py-spy")}
    result = loadlab("profile", "-T", "async-sleep", "--duration", "2", "--out", str(tmp_path / "a"), env=env)
    assert result.returncode == 1
    assert "py-spy was not found" in result.stderr and "--no-profile" in result.stderr
    result = loadlab(
        "profile", "-T", "async-sleep", "--duration", "2", "--no-profile", "--out", str(tmp_path / "b"), env=env
    )
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "b" / "report.md").read_text()
    assert "No profile was recorded" in report


def test_locustfile_syntax_error_is_reported_with_locusts_message(tmp_path: Path) -> None:
    bad = tmp_path / "bad_locustfile.py"
    bad.write_text("from locust import HttpUser\nclass U(HttpUser)\n    pass\n")
    result = loadlab("profile", "--locustfile", str(bad), "--no-profile", "--out", str(tmp_path / "run"))
    assert result.returncode == 1
    assert "SyntaxError" in result.stderr or "invalid syntax" in result.stderr or "expected ':'" in result.stderr
    assert run_json(tmp_path / "run")["status"] == "failed"


def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = loadlab("profile", "--profiles-dir", str(blocker / "profiles"), "-T", "async-sleep", timeout=30)
    assert result.returncode == 1
    assert "cannot create a run folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_out_folder_that_is_not_empty_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("a previous run")
    result = loadlab("profile", "--out", str(tmp_path), timeout=30)
    assert result.returncode == 2
    assert "already exists and is not an empty folder" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_remote_target_host_is_refused_without_allow_remote() -> None:
    result = loadlab("profile", "--target-host", "http://192.0.2.10:8000", timeout=30)
    assert result.returncode == 2
    assert "not a loopback address" in result.stderr and "--allow-remote" in result.stderr


def test_non_loopback_bind_warns(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")  # a non-empty --out stops the run before any server starts
    result = loadlab("profile", "--bind", "0.0.0.0", "--out", str(tmp_path), timeout=30)
    assert "warning: the server will listen on 0.0.0.0" in result.stderr
    assert result.returncode == 2


def test_malformed_profile_or_unknown_schema_leaves_run_json_untouched(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    record = {"schema_version": 1, "kind": "run", "status": "complete", "stats": []}
    (run / "run.json").write_text(json.dumps(record))
    (run / "profile.raw.txt").write_text('process 1:"x";thread (1): Main;f (a.py:1) 3\nthis line is cut sho')
    before = (run / "run.json").read_text()
    result = loadlab("analyze", str(run), timeout=30)
    assert result.returncode == 1 and "expected '<stack> <count>'" in result.stderr
    assert (run / "run.json").read_text() == before
    (run / "run.json").write_text(json.dumps({**record, "schema_version": 99}))
    result = loadlab("report", str(run), timeout=30)
    assert result.returncode == 1 and "schema_version 99" in result.stderr


def _bounded_parameters(openapi: dict[str, Any]) -> list[tuple[str, str, float | None, float | None]]:
    out = []
    for path, ops in openapi["paths"].items():
        for param in ops.get("get", {}).get("parameters", []):
            schema = param.get("schema", {})
            if schema.get("type") == "integer":
                out.append((path, param["name"], schema.get("minimum"), schema.get("maximum")))
    return out


async def test_every_bound_of_the_openapi_schema_is_enforced_with_422(server: Any) -> None:
    # Read the bounds from the app's own OpenAPI schema, so a new parameter is covered too; values
    # just outside each bound, and garbage, must get 422 — never a 500, never a hang.
    import httpx

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        params = _bounded_parameters((await client.get("/openapi.json")).json())
        assert len(params) >= 20
        for path, name, lo, hi in params:
            for bad in [v for v in (None if lo is None else lo - 1, None if hi is None else hi + 1) if v is not None]:
                r = await client.get(path, params={name: int(bad)})
                assert r.status_code == 422, (path, name, bad, r.status_code)
            r = await client.get(path, params={name: "not-a-number"})
            assert r.status_code == 422, (path, name)


def test_harness_killed_outright_leaves_no_process(tmp_path: Path) -> None:
    # SIGKILL cannot be caught: the children must go by themselves (parent-death signals: py-spy,
    # Locust and the stub get SIGTERM from the kernel, and the server, py-spy's child, in turn).
    out = tmp_path / "run"
    proc = start(["-T", "async-sleep", "--duration", "60", "--out", str(out)])
    data = wait_for(out, lambda d: d["phase"] == "load" and d["pids"].get("locust"))
    proc.kill()
    proc.communicate(timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            assert_all_stopped(data["pids"])
            return
        except AssertionError:
            time.sleep(0.2)
    assert_all_stopped(data["pids"])


def test_two_runs_at_the_same_time_do_not_collide(tmp_path: Path) -> None:
    # Free ports are picked per run and run folders are never reused, so two harnesses side by
    # side each finish with their own complete record.
    procs = [
        start(["-T", "async-sleep", "--duration", "2", "--users", "3", "--profiles-dir", str(tmp_path)])
        for _ in range(2)
    ]
    for proc in procs:
        stderr = finish(proc, timeout=90)
        assert proc.returncode == 0, stderr
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(runs) == 2
    for run in runs:
        data = run_json(run)
        assert data["status"] == "complete"
        assert_all_stopped(data["pids"])
    assert run_json(runs[0])["server"]["url"] != run_json(runs[1])["server"]["url"]
