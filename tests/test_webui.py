"""The web UI extension: Locust's UI with the app's inner state, in a real (headless) browser.

Locust runs as a subprocess with its web UI on a free port; Chromium is Debian's (``apt-get
install chromium``), driven by Playwright with ``executable_path`` — nothing is downloaded.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadlab.processes import LOOPBACK, ManagedProcess, free_port, wait_ready
from tests.conftest import Server
from tests.helpers import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.live

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"


@pytest.fixture(scope="module")
def locust_ui(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Locust's web UI for the io scenario, blocking variants only, against the live app."""
    port = free_port()
    log = tmp_path_factory.mktemp("locust-ui") / "locust.log"
    argv = [sys.executable, "-m", "locust", "-f", str(LOADTESTS / "io_routes.py"), "-H", server.url]
    argv += ["--web-host", LOOPBACK, "--web-port", str(port), "-T", "blocking", "--ms", "50"]
    with ManagedProcess(argv, name="locust web UI", log_path=log) as proc:
        url = f"http://{LOOPBACK}:{port}"
        wait_ready(proc, url + "/", timeout=60)
        yield url


def test_tabs_are_declared_and_stats_carry_their_rows(locust_ui: str) -> None:
    page = httpx.get(locust_ui + "/", timeout=10).text
    assert '"extended_tabs"' in page and "App internals" in page and "Loop stalls" in page
    stats = httpx.get(locust_ui + "/stats/requests", timeout=10).json()
    keys = {table["key"] for table in stats["extended_stats"]}
    assert keys == {"app-internals", "loop-stalls"}


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no browser: {CHROMIUM} is absent (apt-get install chromium)")
def test_browser_run_shows_routes_and_nonzero_loop_lag(locust_ui: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(locust_ui + "/")
            page.fill("input[name=userCount]", "6")
            page.fill("input[name=spawnRate]", "10")
            page.get_by_role("button", name="Start").click()
            for route in ("/io/blocking-sleep", "/io/helper-sleep", "/health (canary)"):
                page.get_by_text(route, exact=True).first.wait_for(timeout=20_000)

            page.get_by_role("tab", name="App internals").click()
            lag_row = page.get_by_role("row").filter(has_text="Event-loop lag p99")
            lag_ms = 0.0
            for _ in range(30):  # the UI refreshes every 2 s; the app needs a few polls
                cells = lag_row.first.get_by_role("cell").all_inner_texts() if lag_row.count() else []
                found = re.match(r"([\d.]+) ms", cells[1]) if len(cells) > 1 else None
                lag_ms = float(found.group(1)) if found else 0.0
                if lag_ms > 0:
                    break
                page.wait_for_timeout(1000)
            assert lag_ms > 0, "the App internals tab shows no event-loop lag under a blocking route"
            assert page.get_by_text("Threadpool busy").is_visible()

            page.get_by_role("tab", name="Loop stalls").click()
            page.get_by_text(re.compile("blocking_sleep|sync_helper_sleep")).first.wait_for(timeout=20_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "locust-ui-failure.png"))
            raise
        finally:
            browser.close()
