"""`loadlab profile` end to end, as a subprocess: real uvicorn, real py-spy, real Locust."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import CHROMIUM, CHROMIUM_ARGS, REPO, assert_all_stopped, loadlab, run_json


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two variants of the default demonstration, short."""
    out = tmp_path_factory.mktemp("demo") / "run"
    result = loadlab(
        "profile", "--variants", "blocking-sleep,threadpool-sleep", "--duration", "3", "--users", "10",
        "--out", str(out), env={"MY_API_TOKEN": "hunter2-secret", "LOADLAB_NOTE": "kept"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    return out


def test_demo_writes_every_artefact(demo: Path) -> None:
    suite = run_json(demo)
    assert suite["kind"] == "suite" and suite["status"] == "complete"
    assert [v["name"] for v in suite["variants"]] == ["blocking-sleep", "threadpool-sleep"]
    for variant in ("blocking-sleep", "threadpool-sleep"):
        data = run_json(demo / variant)
        assert data["schema_version"] == 1 and data["status"] == "complete"
        keys = ("flamegraph", "flamegraph_loop", "flamegraph_cpu", "speedscope", "profile_raw", "locust_html")
        for key in (*keys, "report_html", "report_md"):
            assert (demo / variant / data["artefacts"][key]).stat().st_size > 0, key
        names = {s["name"] for s in data["stats"]}
        assert "Aggregated" in names
        for row in data["stats"]:
            assert {"name", "requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms"} <= set(row)
        assert len(data["timeseries"]) >= 2 and "lag_ms" in data["timeseries"][-1]
        assert data["canary_idle"]["p50_ms"] > 0
        assert_all_stopped(data["pids"])
        svg = (demo / variant / "flamegraph.svg").read_text()
        assert svg.startswith("<svg") and "event loop" in svg
        speedscope = json.loads((demo / variant / "profile.speedscope.json").read_text())
        assert speedscope["profiles"][0]["name"].startswith("event loop")


def test_demo_ends_with_a_comparison_that_ranks_the_variants(demo: Path) -> None:
    comparison = json.loads((demo / "comparison.json").read_text())
    rows = {r["name"]: r for r in comparison["rows"]}
    assert comparison["baseline"] == "blocking-sleep"
    # 10 users on 50 ms: the loop-blocking route is capped near 20 req/s, the threadpool one not.
    assert rows["threadpool-sleep"]["rps_ratio"] > 4 and rows["threadpool-sleep"]["rps_significant"]
    assert rows["threadpool-sleep"]["loop_busy"]["median"] < rows["blocking-sleep"]["loop_busy"]["median"]
    assert "× the throughput of blocking-sleep" in rows["threadpool-sleep"]["sentence"]
    assert (demo / "comparison.html").exists() and (demo / "comparison.md").exists()


def test_theory_matches_the_blocking_measurement(demo: Path) -> None:
    (row,) = run_json(demo / "blocking-sleep")["report"]["theory"]
    assert row["model"] == "loop-blocking"
    assert 0.6 <= row["ratio"] <= 1.3  # Little's law: 1 / 50 ms = 20 req/s


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no browser: {CHROMIUM} is absent (apt-get install chromium)")
def test_html_report_renders_every_section(demo: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.goto((demo / "blocking-sleep" / "report.html").as_uri())
            for section in ("verdicts", "charts", "theory", "canary", "stats", "flamegraphs"):
                assert page.locator(f"#{section}").count() == 1, section
            images = page.locator("img")
            assert images.count() >= 5  # four charts and the flame graphs
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
            assert all(w > 0 for w in widths), widths  # every embedded image decodes
            assert "blocking_sleep" in page.locator(".v.problem").first.inner_text()
            # The lag chart marks the loop's stalls; each one's tooltip names the function and its stack.
            stalls = page.locator("svg g.stall title")
            assert stalls.count() >= 1
            tip = stalls.first.text_content() or ""
            assert tip.startswith("blocking_sleep blocked the loop") and "stack (innermost last)" in tip, tip
            # The same stalls in time, and the worst second's flame graph.
            trace = json.loads((demo / "blocking-sleep" / "loop-stalls.trace.json").read_text())
            assert any(e["name"].startswith("blocking_sleep") for e in trace["traceEvents"] if e["ph"] == "X")
            assert "blocking_sleep" in (demo / "blocking-sleep" / "flamegraph-worst-second.svg").read_text()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            page.goto((demo / "comparison.html").as_uri())
            assert "threadpool-sleep" in page.locator("body").inner_text()
        finally:
            browser.close()


def test_cpu_in_async_def_is_named_as_computing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    env = dict(os.environ, LOADLAB_WORK="40")  # 40 ms calls: over the watchdog's 25 ms threshold
    result = subprocess.run(
        [sys.executable, "-m", "loadlab", "profile", "--scenario", "cpu", "-T", "async", "--duration", "3",
         "--users", "3", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    top = run_json(out)["analysis"]["loop"]["blockers"][0]
    assert (top["function"], top["kind"], top["route"]) == ("burn_cpu", "cpu", "/cpu/async")


def test_run_records_only_loadlab_env_vars(demo: Path) -> None:
    for path in demo.rglob("*.json"):
        assert "hunter2-secret" not in path.read_text(), path
    data = run_json(demo / "blocking-sleep")
    assert "LOADLAB_NOTE" not in data["env"]  # not a setting loadlab defines: not recorded
    assert all(k.startswith("LOADLAB_") for k in data["env"])


def test_blocking_variant_blocks_on_the_loop_thread(demo: Path) -> None:
    loop = run_json(demo / "blocking-sleep")["analysis"]["loop"]
    assert loop["blockers"][0]["function"] == "blocking_sleep"
    assert loop["blockers"][0]["route"] == "/io/blocking-sleep"
    assert loop["blockers"][0]["kind"] == "wait"  # from the stall watchdog: no native frames
    assert loop["busy_share"] > 0.4


def test_threadpool_variant_runs_on_anyio_workers(demo: Path) -> None:
    analysis = run_json(demo / "threadpool-sleep")["analysis"]
    assert analysis["threadpool"]["by_function"][0]["function"] == "threadpool_sleep"
    assert all(b["function"] != "threadpool_sleep" for b in analysis["loop"]["blockers"])
    assert analysis["loop"]["busy_share"] < run_json(demo / "blocking-sleep")["analysis"]["loop"]["busy_share"]


def test_analyze_gives_the_same_answer_again(demo: Path) -> None:
    before = run_json(demo / "blocking-sleep")["analysis"]
    result = loadlab("analyze", str(demo))
    assert result.returncode == 0, result.stderr
    assert run_json(demo / "blocking-sleep")["analysis"] == before
    assert "blocking_sleep" in result.stdout


USER_APP = """
import time
from fastapi import FastAPI

app = FastAPI()

@app.get("/")
async def index():
    return {"ok": True}

@app.get("/report")
async def build_report():
    time.sleep(0.03)  # the bug, in someone else's app
    return {"ok": True}
"""

USER_LOCUSTFILE = """
from locust import FastHttpUser, constant, task

class Visitor(FastHttpUser):
    wait_time = constant(0)

    @task
    def report(self):
        self.client.get("/report")
"""


def test_a_users_own_app_is_profiled_without_edits(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(textwrap.dedent(USER_APP))
    (tmp_path / "my_locustfile.py").write_text(textwrap.dedent(USER_LOCUSTFILE))
    before = (tmp_path / "myapp.py").read_text()
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", "myapp:app", "--locustfile", "my_locustfile.py", "--health-path", "/",
        "--duration", "3", "--users", "5", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    data = run_json(out)
    assert data["status"] == "complete"
    assert data["server"]["debug_prefix"] == "/__loadlab__"
    top = data["analysis"]["loop"]["blockers"][0]
    assert (top["function"], top["route"]) == ("build_report", "/report")
    assert (tmp_path / "myapp.py").read_text() == before


def test_no_profile_runs_the_load_without_py_spy(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = loadlab("profile", "--no-profile", "-T", "async", "--duration", "2", "--users", "5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    data = run_json(out)
    assert data["status"] == "complete" and "analysis" not in data
    assert not (out / "flamegraph.svg").exists()
    assert "profiler" not in data["pids"]


def test_doctor_passes_here() -> None:
    result = loadlab("doctor", timeout=60)
    assert result.returncode == 0, result.stdout
    assert "[ok  ] py-spy can sample a child process" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--users", "0"], "Invalid value for '--users'"),
        (["--duration", "abc"], "Invalid value for '--duration'"),
        (["--app", "not a spec"], "--app must be MODULE:ATTRIBUTE"),
        (["--locustfile", "missing.py"], "Invalid value for '--locustfile'"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = loadlab("profile", *args, timeout=30)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_env_var_is_named_too() -> None:
    env = dict(os.environ, LOADLAB_USERS="lots")
    result = subprocess.run(
        [sys.executable, "-m", "loadlab", "profile"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "'--users'" in result.stderr


def test_interrupt_under_load_stops_everything_and_keeps_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadlab", "profile", "-T", "blocking", "--duration", "60", "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (
                (out / "run.json").exists()
                and run_json(out).get("phase") == "load"
                and run_json(out)["pids"].get("locust")
            ):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the run never reached the load phase")
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    data = run_json(out)
    assert data["status"] == "incomplete"
    assert "load" in data["reason"]
    assert_all_stopped(data["pids"])
    assert (out / "profile.raw.txt").exists()  # py-spy still wrote what it had
