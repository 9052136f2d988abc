"""The flame graphs as a reader meets them, in headless Chromium (Debian's, through Playwright):
they open on the app's own frames, unfold, sort and search. From recorded profiles: no load here.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from loadlab.analysis.attribution import analyse_profile
from loadlab.analysis.stacks import read_raw
from loadlab.render.flamegraph import render_flamegraph
from tests.helpers import CHROMIUM, CHROMIUM_ARGS

DATA = Path(__file__).parent / "data"
SCREEN = {"width": 1280, "height": 800}

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason=f"no browser: {CHROMIUM} is absent (apt-get install chromium)"
)


def _loop_svg(name: str, out: Path) -> Path:
    svg = out / f"{name}.svg"
    svg.write_text(render_flamegraph(read_raw(DATA / f"{name}.raw.txt.gz"), f"{name}: the event loop", loop_only=True))
    return svg


def _frame(page: object, view: str, name: str) -> object:
    # The frame's own <g>, found by the first line of its tooltip.
    return page.locator(f"#{view} g.f", has=page.locator("title", has_text=re.compile(rf"^{re.escape(name)}")))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("recording", "blocker"),
    [("io-blocking", "blocking_sleep"), ("shop-mixed", "export_catalog")],  # shop: middleware, dependencies
)
def test_the_loop_flame_graph_opens_on_the_blocker(recording: str, blocker: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    svg = _loop_svg(recording, tmp_path)
    if recording == "shop-mixed":  # the recorded analysis's top blocker of the app's own code
        analysis = analyse_profile(
            read_raw(DATA / f"{recording}.raw.txt.gz"), routes_file=DATA / "shop-mixed.routes.json"
        )
        assert blocker in [b["function"] for b in analysis["loop"]["blockers"][:6]]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=SCREEN)
        try:
            page.goto(svg.as_uri())
            matches = _frame(page, "folded", blocker)
            widths = [float(matches.nth(i).get_attribute("data-w") or 0) for i in range(matches.count())]
            frame = matches.nth(widths.index(max(widths)))  # where most of its samples are
            box = frame.locator("rect").bounding_box()
            assert box is not None and box["y"] + box["height"] < SCREEN["height"] / 2, box  # top half, no scroll
            page.screenshot(path=str(tmp_path / f"{recording}-folded.png"))

            # Unfolded: the framework's frames are back, and the blocker falls further down.
            page.click("#fold")
            assert page.locator("#full").is_visible() and not page.locator("#folded").is_visible()
            assert _frame(page, "full", "Starlette.__call__").count() >= 1
            assert page.text_content("#fold") == "fold library frames"

            # Search: the matching frames light up, with their share of the samples.
            page.click("#fold")
            page.fill("#search", "sleep" if recording == "io-blocking" else blocker)
            found = page.text_content("#found") or ""
            share = re.search(r"frames match '.+': ([\d.]+)% of samples", found)
            assert share and float(share.group(1)) > 1, found
            assert page.locator("#folded g.f.hit").count() >= 1
            page.screenshot(path=str(tmp_path / f"{recording}-search.png"))

            # Sort alphabetically and back: the same frames, laid out anew.
            before = frame.get_attribute("data-x")
            page.click("#sort")
            assert page.text_content("#sort") == "sort: alphabetical"
            page.click("#sort")
            assert page.text_content("#sort") == "sort: widest first" and frame.get_attribute("data-x") == before
        finally:
            browser.close()
