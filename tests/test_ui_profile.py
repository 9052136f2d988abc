"""``loadlab ui``: each test started from Locust's web UI is profiled, diagnosed and shown there.

A real ``loadlab ui`` (the app, its stub, Locust's web UI, py-spy attached per test) on free ports;
tests are started and stopped from the form in headless Chromium (Debian's, through Playwright) or
by the same HTTP calls the form makes (``POST /swarm``, ``POST /stop``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loadlab.processes import LOOPBACK, free_port
from loadlab.ui_page import _latest, safe_file  # not ui_plugin: importing Locust would patch pytest with gevent
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, REPO, assert_all_stopped, tiny_blocking_app

pytestmark = pytest.mark.live

READY_S = 90.0
ANALYSED_S = 90.0


class Ui:
    """One ``loadlab ui`` in the background, stopped with SIGINT (Ctrl-C) at the end."""

    def __init__(self, proc: subprocess.Popen[str], url: str, profiles: Path) -> None:
        self.proc, self.url, self.profiles = proc, url, profiles

    @property
    def session(self) -> Path:
        found = sorted(self.profiles.glob("*-ui"))
        assert found, f"no session folder in {self.profiles}"
        return found[-1]

    def swarm(self, users: int, tags: str = "", **form: Any) -> None:
        data = {"user_count": users, "spawn_rate": 20, "loadlab_tags": tags, **form}
        answer = httpx.post(self.url + "/swarm", data=data, timeout=10).json()
        assert answer["success"], answer

    def stop_test(self) -> None:
        assert httpx.post(self.url + "/stop", timeout=10).json()["success"]

    def analysed(self, test: str, timeout: float = ANALYSED_S) -> dict[str, Any]:
        """run.json of ``test`` once the test is analysed and its report written."""
        path = self.session / test / "run.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                data: dict[str, Any] = json.loads(path.read_text())
                if data.get("ui", {}).get("analysed"):
                    return data
            assert self.proc.poll() is None, f"loadlab ui exited:\n{self.proc.stderr and self.proc.stderr.read()}"
            time.sleep(0.3)
        raise AssertionError(f"{test} was not analysed within {timeout:g} s")

    def interrupt(self, timeout: float = 90) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return out + err


@contextlib.contextmanager
def loadlab_ui(tmp: Path, *args: str, cwd: Path = REPO) -> Iterator[Ui]:
    web_port = free_port()
    profiles = tmp / "profiles"
    argv = [sys.executable, "-m", "loadlab", "ui", "--app-port", "0", "--web-port", str(web_port)]
    argv += ["--profiles-dir", str(profiles), *args]
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ui = Ui(proc, f"http://{LOOPBACK}:{web_port}", profiles)
    try:
        deadline = time.monotonic() + READY_S
        while True:
            assert proc.poll() is None, f"loadlab ui exited ({proc.returncode}):\n{proc.communicate()}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ui.url + "/loadlab/tests", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, "loadlab ui's web UI never answered"
            time.sleep(0.3)
        yield ui
    finally:
        if proc.poll() is None:
            ui.interrupt()


def blockers(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in run["analysis"]["loop"]["blockers"] if b.get("file")]


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no browser: {CHROMIUM} is absent (apt-get install chromium)")
def test_web_ui_profiles_each_test_and_compares_them(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with loadlab_ui(tmp_path, "--scenario", "io") as ui, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            # Test 1, from the form: the blocking variants.
            page.goto(ui.url + "/")
            page.fill("input[name=userCount]", "11")
            page.fill("input[name=spawnRate]", "20")
            page.get_by_text("Custom parameters").click()
            page.fill("input[name=loadlabTags]", "blocking")
            page.get_by_role("button", name="Start").click()
            page.get_by_role("tab", name="Profile").click()
            frame = page.frame_locator("#loadlab-profile-frame")
            frame.get_by_text("Top blockers so far").wait_for(timeout=30_000)  # the live view
            frame.get_by_text("blocking_sleep").first.wait_for(timeout=30_000)
            page.wait_for_timeout(5000)
            page.get_by_role("button", name="Stop").click()
            frame.get_by_text("Verdicts").wait_for(timeout=ANALYSED_S * 1000)
            row = frame.get_by_role("row").filter(has_text="blocking_sleep").first
            assert "wait" in row.inner_text(), row.inner_text()
            page.screenshot(path=str(tmp_path / "ui-profile.png"), full_page=True)
            if os.environ.get("LOADLAB_UPDATE_SCREENSHOTS"):
                page.screenshot(path=str(REPO / "docs" / "img" / "ui-profile.png"), full_page=True)

            # The flame graph shown inline and the report it links to are served from the run folder.
            flame = frame.locator("iframe.flame").get_attribute("src")
            assert flame and flame.endswith(".svg")
            answer = httpx.get(f"{ui.url}/loadlab/{flame.removeprefix('./')}", timeout=10)
            assert answer.status_code == 200 and "<svg" in answer.text[:500]
            report = httpx.get(ui.url + "/loadlab/runs/test-1/report.html", timeout=10)
            assert report.status_code == 200 and "blocking_sleep" in report.text

            # Test 2, from the form again (New test): the async variant, loaded harder mid-test (Edit).
            # Locust shows New once its stop's clean-up ends: blocked requests in flight, and the
            # test_stop listeners (our outputs, the demo's last poll of a blocked app), can take a while.
            page.get_by_role("button", name="New").click(timeout=ANALYSED_S * 1000)
            page.get_by_text("Custom parameters").click()
            page.fill("input[name=loadlabTags]", "async")
            page.get_by_role("button", name="Start").click()
            page.wait_for_timeout(3000)
            ui.swarm(15, "async")  # what Edit posts while a test runs
            page.wait_for_timeout(3000)
            page.get_by_role("button", name="Stop").click()
            frame.get_by_text("test-2: complete").wait_for(timeout=ANALYSED_S * 1000)
        except Exception:
            page.screenshot(path=str(tmp_path / "ui-failure.png"), full_page=True)
            raise
        finally:
            browser.close()

        first, second = ui.analysed("test-1"), ui.analysed("test-2")
        assert first["kind"] == second["kind"] == "ui-test"
        assert first["ui"]["tags"] == ["blocking"] and second["ui"]["tags"] == ["async"]
        assert first["config"]["users"] == 11
        # Recorded as `loadlab profile` records: the server alone, the demo's pool by recorders of its own.
        assert first["profiler"]["mode"] == "split" and first["profiler"]["cpu_percent"] > 0
        # The loop's stacks from the app's sampler, cut to each test (not the session so far).
        for test in (first, second):
            assert test["profiler"]["loop"] == "sampler", test["profiler"]
            assert test["profiler"]["loop_seconds"] < test["timings_s"]["load"] + 2.5, test["profiler"]
        assert [c for c in first["profiler"]["children"] if c["samples"] > 0 and c["exit_code"] == 0]
        assert any(t["role"] == "process-pool child" for t in first["analysis"]["threads"])
        assert [e["users"] for e in second["ui"]["edits"]] == [15]
        assert blockers(first)[0]["function"] in ("blocking_sleep", "sync_helper_sleep")
        assert blockers(first)[0]["kind"] == "wait"
        assert not any(b["function"] == "blocking_sleep" for b in blockers(second))
        assert second["analysis"]["loop"]["busy_share"] < first["analysis"]["loop"]["busy_share"] / 3

        comparison = httpx.get(ui.url + "/loadlab/compare?a=test-1&b=test-2", timeout=120, follow_redirects=True)
        assert comparison.status_code == 200 and "test-1" in comparison.text and "test-2" in comparison.text

        # Only files of the session folder are served.
        (ui.session / "test-1" / "leak").symlink_to("/etc/hostname")
        for bad in ("../run.json", "%2e%2e/%2e%2e/etc/hostname", "/etc/hostname", "test-1/leak", "test-1/../../x"):
            assert httpx.get(f"{ui.url}/loadlab/runs/{bad}", timeout=10, follow_redirects=True).status_code == 404, bad
        assert httpx.get(ui.url + "/loadlab/compare?a=test-1&b=..", timeout=10).status_code == 404


def test_a_tests_header_names_its_host_only_when_the_form_gave_one(tmp_path: Path) -> None:
    folder = tmp_path / "test-1"
    folder.mkdir()
    info = {"test": 1, "state": "stopped", "users": 11, "tags": ["blocking"], "host": ""}
    (folder / "ui-test.json").write_text(json.dumps(info))
    assert "11 users, tags: blocking</p>" in _latest(folder, no_profile=False)  # not "…, host </p>"
    (folder / "ui-test.json").write_text(json.dumps({**info, "host": "http://127.0.0.1:8000"}))
    assert "tags: blocking, host http://127.0.0.1:8000</p>" in _latest(folder, no_profile=False)


def test_safe_file_keeps_to_the_session(tmp_path: Path) -> None:
    session = tmp_path / "session"
    (session / "test-1").mkdir(parents=True)
    (session / "test-1" / "report.html").write_text("ok")
    (tmp_path / "secret").write_text("no")
    (session / "test-1" / "out").symlink_to(tmp_path / "secret")
    assert safe_file(session, "test-1/report.html") == (session / "test-1" / "report.html").resolve()
    for bad in ("", "../secret", "test-1/../../secret", "/etc/hostname", "test-1/out", "test-1", "test-1//report.html"):
        assert safe_file(session, bad) is None, bad


def test_users_app_gets_its_blocker_named_and_ctrl_c_keeps_the_test(tmp_path: Path) -> None:
    app = tiny_blocking_app(tmp_path / "theirs")
    with loadlab_ui(tmp_path, "--app", "shopapp:app", "--locustfile", "shopper.py", cwd=app) as ui:
        if os.path.exists(CHROMIUM):  # from the form, as a user would
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                try:
                    page.goto(ui.url + "/")
                    page.fill("input[name=userCount]", "5")
                    page.get_by_role("button", name="Start").click()
                    page.get_by_role("tab", name="Profile").click()
                    frame = page.frame_locator("#loadlab-profile-frame")
                    frame.get_by_text("slow_lookup").first.wait_for(timeout=30_000)  # live, while it runs
                    page.wait_for_timeout(3000)
                    page.get_by_role("button", name="Stop").click()
                    frame.get_by_text("Verdicts").wait_for(timeout=ANALYSED_S * 1000)
                    row = frame.get_by_role("row").filter(has_text="slow_lookup").first
                    assert "wait" in row.inner_text() and "/items/{key}" in row.inner_text(), row.inner_text()
                except Exception:
                    page.screenshot(path=str(tmp_path / "ui-failure.png"), full_page=True)
                    raise
                finally:
                    browser.close()
        else:
            ui.swarm(5)
            time.sleep(6)
            ui.stop_test()
        first = ui.analysed("test-1")
        assert first["status"] == "complete", first.get("reason")
        top = blockers(first)[0]
        assert (top["function"], top["kind"]) == ("slow_lookup", "wait"), top
        assert top["file"].endswith("shopapp.py")

        # A second test, interrupted by Ctrl-C: kept as incomplete, nothing left running.
        ui.swarm(5)
        deadline = time.monotonic() + 30
        while not (ui.session / "test-2" / "live.json").exists():
            assert time.monotonic() < deadline, "the second test never started recording"
            time.sleep(0.2)
        time.sleep(2)
        pids = json.loads((ui.session / "test-2" / "run.json").read_text())["pids"]
        output = ui.interrupt()
        assert ui.proc.returncode == 0, output
    second = json.loads((ui.session / "test-2" / "run.json").read_text())
    assert second["status"] == "incomplete", second.get("reason")
    assert second["analysis"]["loop"]["blockers"], "what was recorded before Ctrl-C is analysed"
    assert (ui.session / "test-2" / "report.html").is_file()
    assert_all_stopped(pids)


def test_no_profile_records_nothing_and_says_so(tmp_path: Path) -> None:
    app = tiny_blocking_app(tmp_path / "theirs")
    with loadlab_ui(tmp_path, "--app", "shopapp:app", "--locustfile", "shopper.py", "--no-profile", cwd=app) as ui:
        assert "--no-profile" in httpx.get(ui.url + "/loadlab/profile", timeout=10).text
        ui.swarm(3)
        time.sleep(3)
        ui.stop_test()
        run = ui.analysed("test-1")
        page = httpx.get(ui.url + "/loadlab/profile", timeout=10).text
    assert run["status"] == "complete", run.get("reason")
    assert "analysis" not in run and not (ui.session / "test-1" / "profile.raw.txt").exists()
    assert "nothing is recorded with <code>--no-profile</code>" in page
