"""A run that failed says so; nothing is mixed, lost or written down that should not be.

One test (or a few) per case of issue 12, each run as a user would: `loadlab profile` as a
subprocess on an app written into a temp folder. Every run is short and bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from loadlab.analysis.health import assess, pyspy_warnings
from loadlab.results import read_locust_stats
from tests.helpers import REPO, assert_all_stopped, finish, kill_mid_load, loadlab, run_json, start, wait_for

APP = """
import os
from fastapi import FastAPI, HTTPException

app = FastAPI()
calls = 0


@app.get("/health")
async def health():
    return {"ok": True}


@app.get("/boom")
async def boom():
    raise RuntimeError("the database is gone")


@app.get("/flaky")
async def flaky():
    global calls
    calls += 1
    if calls % 2:
        raise HTTPException(status_code=503, detail="try again")
    return {"ok": True}
"""

LOCUSTFILE = """
from locust import HttpUser, constant, tag, task


class User(HttpUser):
    wait_time = constant(0.05)

    @tag("boom")
    @task
    def boom(self):
        self.client.get("/boom")

    @tag("flaky")
    @task
    def flaky(self):
        self.client.get("/flaky")

    @tag("health")
    @task
    def health(self):
        self.client.get("/health")
"""

RAISING_ON_START = """
from locust import HttpUser, constant, task


class User(HttpUser):
    wait_time = constant(0.05)

    def on_start(self):
        raise ValueError("login failed: no credentials")

    @task
    def health(self):
        self.client.get("/health")
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "svc.py").write_text(textwrap.dedent(APP))
    (tmp_path / "svc_locustfile.py").write_text(textwrap.dedent(LOCUSTFILE))
    (tmp_path / "raising_locustfile.py").write_text(textwrap.dedent(RAISING_ON_START))
    return tmp_path


def profile(
    app_dir: Path, *args: str, locustfile: str = "svc_locustfile.py", env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = app_dir / "run"
    result = loadlab(
        "profile", "--app", "svc:app", "--locustfile", locustfile, "--no-profile", "-u", "3", "-t", "2",
        "--out", str(out), *args, cwd=app_dir, env=env,
    )  # fmt: skip
    return result, out


def first_verdict(out: Path) -> str:
    text: str = run_json(out)["report"]["verdicts"][0]["text"]
    return text


# 2. Failed load is reported as a failure, first, with its cause.


def test_every_request_failing_fails_the_run_and_says_why_first(app_dir: Path) -> None:
    result, out = profile(app_dir, "-T", "boom")
    assert result.returncode == 1, result.stderr
    data = run_json(out)
    assert data["status"] == "failed" and data["health"]["verdict"] == "failed"
    agg = next(s for s in data["stats"] if s["name"] == "Aggregated")
    assert agg["requests"] > 0 and agg["failures"] == agg["requests"]
    verdict = first_verdict(out)
    assert f"All {agg['requests']:,} requests failed" in verdict
    assert "500" in verdict and "/boom" in verdict  # the most common error and where
    assert all("followed the" not in v["text"] for v in data["report"]["verdicts"])  # no theory all-clear
    assert data["report"]["verdicts"][0]["level"] == "problem"
    assert "100%" in result.stdout and "failed" in result.stdout  # the summary's failures column
    assert result.stderr.strip().splitlines()[-1].startswith("error: the run is failed: All")


def test_a_tag_that_selects_no_task_fails_the_run(app_dir: Path) -> None:
    result, out = profile(app_dir, "-T", "nosuchtag")
    assert result.returncode == 1, result.stderr
    assert run_json(out)["status"] == "failed"
    verdict = first_verdict(out)
    assert verdict.startswith("No request was made") and "nosuchtag" in verdict


def test_a_tag_that_selects_only_the_canary_fails_the_run(tmp_path: Path) -> None:
    # The demo's locustfiles keep their canary under any -T: it alone must not make a run.
    out = tmp_path / "run"
    result = loadlab("profile", "-T", "no-such-variant", "--no-profile", "-u", "3", "-t", "2", "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert run_json(out)["status"] == "failed"
    assert first_verdict(out).startswith("No request was made besides the canary's")


def test_secret_names_and_values_are_told_from_settings(tmp_path: Path) -> None:
    from loadlab.config import KNOWN_ENV
    from loadlab.redact import scrub_folder, secrets_of

    settings = {
        "LOADLAB_THREAD_TOKENS": "1000",  # loadlab's own setting, not a token
        "LOADLAB_AUTH_ENABLED": "true",  # a word, not a secret
        "LOADLAB_API_TOKEN": "s3cr3t-t0ken",
        "LOADLAB_UPSTREAM_URL": "http://svc:pa55word-x@127.0.0.1:9/",
    }
    assert secrets_of(settings, KNOWN_ENV) == ["s3cr3t-t0ken", "pa55word-x"]
    (tmp_path / "run.json").write_text('{"requests": 21000, "passed": true}')
    (tmp_path / "locust.html").write_text("host s3cr3t-t0ken and &quot;s3cr3t-t0ken&quot;")
    changed = scrub_folder(tmp_path, secrets_of(settings, KNOWN_ENV))
    assert [p.name for p in changed] == ["locust.html"]
    assert (tmp_path / "run.json").read_text() == '{"requests": 21000, "passed": true}'
    assert "s3cr3t" not in (tmp_path / "locust.html").read_text()


def test_an_on_start_that_raises_fails_the_run_with_its_message(app_dir: Path) -> None:
    result, out = profile(app_dir, locustfile="raising_locustfile.py")
    assert result.returncode == 1, result.stderr
    assert run_json(out)["status"] == "failed"
    assert "login failed: no credentials" in first_verdict(out)


def test_an_app_that_is_not_asgi_is_refused_at_start(tmp_path: Path) -> None:
    (tmp_path / "svc_locustfile.py").write_text(textwrap.dedent(LOCUSTFILE))
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", "os:path", "--locustfile", "svc_locustfile.py", "--no-profile", "-u", "2", "-t", "2",
        "--out", str(out), cwd=tmp_path, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--app os:path is not an ASGI app" in result.stderr
    assert run_json(out)["status"] == "failed"


def test_failures_above_the_budget_make_the_run_doubtful_with_exit_3(app_dir: Path) -> None:
    result, out = profile(app_dir, "-T", "flaky")
    assert result.returncode == 3, result.stderr
    data = run_json(out)
    assert data["status"] == "doubtful"
    verdict = first_verdict(out)
    assert "requests failed" in verdict and "503" in verdict and "--fail-ratio" in verdict
    # The same run with failures allowed is complete.
    (app_dir / "run").rename(app_dir / "run-doubtful")
    result, out = profile(app_dir, "-T", "flaky", "--fail-ratio", "0.9")
    assert result.returncode == 0, result.stderr
    assert run_json(out)["status"] == "complete"


def test_health_is_judged_from_the_recorded_signals() -> None:
    def run(requests: int, failures: int, **extra: Any) -> dict[str, Any]:
        stats = [{"name": "Aggregated", "requests": requests, "failures": failures, "rps": 1.0}]
        return {"config": {"fail_ratio": 0.01, "profile": True}, "stats": stats, **extra}

    assert assess(run(100, 0))["verdict"] == "ok"
    assert assess(run(100, 1))["verdict"] == "ok"  # 1% is within the default budget
    assert assess(run(100, 2))["verdict"] == "doubtful"
    assert assess(run(100, 100))["verdict"] == "failed"
    assert assess(run(0, 0))["verdict"] == "failed"
    assert assess({"config": {}, "stats": []})["verdict"] == "failed"
    lagging = run(100, 0, profiler_warnings=["py-spy> 1.20s behind in sampling, results may be inaccurate."])
    health = assess(lagging)
    assert health["verdict"] == "doubtful" and "1.2 s" in health["problems"][0]["text"]
    assert assess(run(100, 0, profile_error="py-spy wrote no profile"))["verdict"] == "doubtful"
    # The app's loop sampler gave no stacks: the loop's profile is py-spy's non-pausing one.
    note = "the app's loop sampler gave no stacks (the app has its own SIGALRM handler or timer)"
    inexact = assess(run(100, 0, profiler={"loop": "py-spy", "loop_note": note}))
    assert inexact["verdict"] == "doubtful" and "SIGALRM" in inexact["problems"][0]["text"]
    assert assess(run(100, 0, profiler={"loop": "sampler"}))["verdict"] == "ok"


# 10 (py-spy's warnings reach the report).


def test_pyspy_behind_in_sampling_warnings_are_read_from_the_server_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        "py-spy> Sampling process 1000 times a second. Press Control-C to exit.\n"
        "INFO:     Started server process [1]\n"
        "py-spy> 1.03s behind in sampling, results may be inaccurate. Try reducing the sampling rate\n"
        "py-spy> 512.5ms behind in sampling, results may be inaccurate. Try reducing the sampling rate\n"
    )
    warnings = pyspy_warnings(log)
    assert len(warnings) == 2
    health = assess({"config": {}, "stats": [{"name": "Aggregated", "requests": 5, "failures": 0, "rps": 1}],
                     "profiler_warnings": warnings})  # fmt: skip
    assert "fell behind in sampling 2 times (up to 1.0 s)" in health["problems"][0]["text"]


# 3. Final stats come from the complete source.


def test_final_stats_come_from_locusts_json_when_its_csv_is_stale(tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    header = "Type,Name,Request Count,Failure Count,Requests/s,50%,95%,99%,Min Response Time,Average Response Time,Max Response Time\n"  # noqa: E501
    Path(f"{prefix}_stats.csv").write_text(header + "GET,/x,55,5,27.5,3,6,9,1,3,9\n,Aggregated,55,5,27.5,3,6,9,1,3,9\n")
    entry = {
        "name": "/x", "method": "GET", "start_time": 1000.0, "last_request_timestamp": 1002.0, "num_requests": 100,
        "num_failures": 15, "total_response_time": 400.0, "min_response_time": 1.0, "max_response_time": 12.0,
        "response_times": {"3": 50, "4": 45, "12": 5},
    }  # fmt: skip
    Path(f"{prefix}.json").write_text(json.dumps([entry]))
    rows = {r["name"]: r for r in read_locust_stats(prefix)}
    assert rows["Aggregated"]["requests"] == 100 and rows["Aggregated"]["failures"] == 15
    assert rows["/x"]["rps"] == 50.0 and rows["/x"]["p50_ms"] == 4.0 and rows["/x"]["p99_ms"] == 12.0
    Path(f"{prefix}.json").write_text("[not json")  # a broken JSON falls back to the CSV
    assert {r["name"]: r for r in read_locust_stats(prefix)}["Aggregated"]["requests"] == 55


# 1. Two runs into one folder: one claims it, the other is refused.


def test_two_runs_into_one_out_folder_at_the_same_instant_never_mix(tmp_path: Path) -> None:
    for i in range(6):  # each a race of two runs for one folder
        out = tmp_path / f"out-{i}"
        args = ["-T", "async-sleep", "--no-profile", "-u", "2", "-t", "30", "--out", str(out)]
        procs = [start(args), start(args)]
        deadline = time.monotonic() + 60
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        losers = [p for p in procs if p.poll() is not None]
        assert len(losers) == 1, f"round {i}: both runs went on into {out}"
        (winner,) = [p for p in procs if p is not losers[0]]
        stderr = finish(losers[0], timeout=10)
        # Refused by the check up front (2) or, when both passed it together, by the claim (1).
        assert losers[0].returncode in (1, 2) and "already used by another run" in stderr, stderr
        wait_for(out, lambda d: d.get("pids", {}).get("server"))
        winner.send_signal(signal.SIGTERM)
        finish(winner)
        assert winner.returncode == 130
        data = run_json(out)
        assert data["status"] == "incomplete"
        assert_all_stopped(data["pids"])


# 4. No secret is written down.


def test_no_secret_is_written_anywhere_in_the_run_folder(server: Any, tmp_path: Path) -> None:
    token, password = "planted-token-7f3a9c", "pw-s3cret-b41d"
    host = server.url.replace("http://", f"http://loaduser:{password}@")
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--target-host", host, "--scenario", "trivial", "-T", "async", "-u", "2", "-t", "2",
        "--out", str(out), env={"LOADLAB_API_TOKEN": token, "LOADLAB_USERS": "2"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "locust.html" for p in files)
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace")
        assert token not in text, path
        assert password not in text, path
    data = run_json(out)
    assert "LOADLAB_API_TOKEN" not in data["env"] and data["env"]["LOADLAB_USERS"] == "2"
    assert data["config"]["target_host"].startswith("http://loaduser:***@")
    assert data["server"]["url"].startswith("http://loaduser:***@")
    assert token not in result.stdout + result.stderr and password not in result.stdout + result.stderr


# 6. Processes that ignore SIGTERM or leave the process tree are stopped too.

STUBBORN_APP = """
import os, subprocess, sys
from contextlib import asynccontextmanager
from fastapi import FastAPI

CHILD = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
# A double fork: the grandchild is re-parented at once, so no process tree leads to it.
ORPHAN = (
    "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', %r], start_new_session=True, "
    "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid, flush=True)" % CHILD
)


@asynccontextmanager
async def lifespan(app):
    pids = [
        subprocess.Popen([sys.executable, "-c", CHILD]).pid,
        subprocess.Popen([sys.executable, "-c", CHILD], start_new_session=True).pid,
        int(subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True).stdout),
    ]
    with open(os.environ["STUBBORN_PIDS"], "w") as f:
        f.write(" ".join(map(str, pids)))
    yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health():
    return {"ok": True}
"""


def _stubborn(tmp_path: Path) -> tuple[list[str], dict[str, str], Path]:
    (tmp_path / "stubborn.py").write_text(textwrap.dedent(STUBBORN_APP))
    (tmp_path / "svc_locustfile.py").write_text(textwrap.dedent(LOCUSTFILE))
    pids = tmp_path / "pids"
    args = ["--app", "stubborn:app", "--locustfile", str(tmp_path / "svc_locustfile.py"), "-T", "health", "-u", "2"]
    return args, {"STUBBORN_PIDS": str(pids)}, pids


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_all_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def test_children_that_ignore_sigterm_or_detach_are_stopped_and_listed(tmp_path: Path) -> None:
    args, env, pids_file = _stubborn(tmp_path)
    out = tmp_path / "run"
    result = loadlab("profile", *args, "-t", "2", "--out", str(out), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    pids = [int(p) for p in pids_file.read_text().split()]
    try:
        assert _wait_all_gone(pids, 5) == []
        data = run_json(out)
        assert set(pids) <= set(data["leftover_pids"]), (pids, data["leftover_pids"])
        assert data["timings_s"]["stopping"] < 20  # a loose ceiling: it was 28 s before the fix
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_harness_killed_outright_leaves_no_stubborn_or_detached_process(tmp_path: Path) -> None:
    args, env, pids_file = _stubborn(tmp_path)
    out = tmp_path / "run"
    proc = start([*args, "-t", "60", "--out", str(out)], cwd=tmp_path, env=env)
    data = wait_for(out, lambda d: d["phase"] == "load" and d["pids"].get("locust"))
    pids = [int(p) for p in pids_file.read_text().split()]
    proc.kill()
    proc.communicate(timeout=10)
    try:
        assert _wait_all_gone(pids, 20) == [], "the app's children outlived a harness killed with SIGKILL"
        assert _wait_all_gone([p for p in data["pids"].values() if p], 10) == []
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


# 7. The right culprit and exit code under py-spy.

FAILING_STARTUP = """
from contextlib import asynccontextmanager
from fastapi import FastAPI


@asynccontextmanager
async def lifespan(app):
    raise RuntimeError("cannot reach the database")
    yield


app = FastAPI(lifespan=lifespan)
"""


def test_the_servers_own_exit_code_is_reported_under_py_spy(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(textwrap.dedent(FAILING_STARTUP))
    (tmp_path / "svc_locustfile.py").write_text(textwrap.dedent(LOCUSTFILE))
    result = loadlab(
        "profile", "--app", "failing:app", "--locustfile", "svc_locustfile.py", "--out", str(tmp_path / "run"),
        cwd=tmp_path, timeout=90,
    )  # fmt: skip
    assert result.returncode == 1
    assert "server exited with code 3" in result.stderr  # uvicorn's "startup failed", not py-spy's 0
    assert "cannot reach the database" in result.stderr


def test_killing_py_spy_blames_py_spy_not_the_server(tmp_path: Path) -> None:
    # A def route: py-spy attaches at its first thread (on demand), and is killed once it runs.
    code, stderr, data = kill_mid_load(
        "profiler", ["-T", "threadpool-sleep", "-u", "3", "--duration", "60"], tmp_path / "run"
    )
    assert code == 1, stderr
    assert data["status"] == "failed"
    assert data["reason"].startswith("py-spy exited (killed by SIGKILL)"), data["reason"]
    assert_all_stopped(data["pids"])


# 8. One line, never a traceback.


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--bind", "999.1.1.1"], 2, "--bind '999.1.1.1' is not an address"),
        (["--bind", "8.8.8.8"], 2, "--bind 8.8.8.8 is not an address of this machine"),
        (["--target-host", "http://127.0.0.1:1"], 1, "--target-host does not answer at http://127.0.0.1:1/health"),
    ],
)
def test_bad_addresses_are_one_line_errors(tmp_path: Path, args: list[str], code: int, says: str) -> None:
    result = loadlab("profile", *args, "-T", "async-sleep", "--out", str(tmp_path / "run"), timeout=60)
    assert result.returncode == code
    assert says in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("record", "says"),
    [
        ([1, 2], "holds a JSON list, not a loadlab run record"),
        ({"schema_version": 1, "kind": "run", "status": "complete", "stats": None}, "'stats' is NoneType"),
        ({"schema_version": 1, "kind": "run", "status": "complete", "stats": [{"name": "x"}]}, "stats[0] has no"),
    ],
)
def test_stored_records_of_the_wrong_shape_are_one_line_errors(tmp_path: Path, record: Any, says: str) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(record))
    before = (run / "run.json").read_text()
    for command in ("analyze", "report"):
        result = loadlab(command, str(run), timeout=30)
        assert result.returncode == 1, (command, result.stderr)
        assert says in result.stderr and str(run / "run.json") in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert (run / "run.json").read_text() == before


def test_a_garbage_routes_file_is_named_in_the_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"schema_version": 1, "kind": "run", "status": "complete", "stats": []}))
    (run / "profile.raw.txt").write_text('process 1:"x";thread (1): Main;f (a.py:1) 3\n')
    (run / "routes.json").write_text("<html>not json</html>")
    result = loadlab("analyze", str(run), timeout=30)
    assert result.returncode == 1
    assert str(run / "routes.json") in result.stderr and "not valid JSON" in result.stderr


# 10. Analysing an empty profile leaves the stored analysis alone.


def test_analyze_on_an_empty_profile_keeps_the_stored_analysis(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    record = {"schema_version": 1, "kind": "run", "status": "complete", "stats": [], "analysis": {"loop": {}}}
    (run / "run.json").write_text(json.dumps(record))
    (run / "profile.raw.txt").write_text("")
    before = (run / "run.json").read_text()
    result = loadlab("analyze", str(run), timeout=30)
    assert result.returncode == 1
    assert "holds no samples" in result.stderr and "profile.raw.txt" in result.stderr
    assert (run / "run.json").read_text() == before


def test_the_guardian_ends_a_tree_by_its_token_when_the_harness_goes() -> None:
    # The net under the stop ladder, in isolation: a process carrying a token is ended when the
    # guardian's stdin closes, even though it ignores SIGTERM.
    from loadlab._guard import TOKEN_VAR

    env = {**os.environ, TOKEN_VAR: "test-token-guard"}
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); time.sleep(60)"
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", code], env=env, start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert victim.stdout is not None and victim.stdout.readline().strip() == "ready"  # SIGTERM ignored from here
    guard = subprocess.Popen([sys.executable, "-m", "loadlab._guard"], stdin=subprocess.PIPE, cwd=REPO)
    try:
        assert guard.stdin is not None
        guard.stdin.write(b"test-token-guard\n")
        guard.stdin.close()
        assert guard.wait(timeout=15) == 0
        assert victim.wait(timeout=5) == -signal.SIGKILL
    finally:
        for p in (victim, guard):
            if p.poll() is None:
                p.kill()
