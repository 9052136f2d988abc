"""The reports' tables are defined once (loadlab.render.sections) and show alike in HTML and Markdown."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from loadlab.analysis.theory import canary_damage, theory_table
from loadlab.analysis.verdicts import model_of, verdicts
from loadlab.render import html, markdown
from loadlab.render.sections import Table, comparison_table, run_sections
from loadlab.results import load_run

Recorded = tuple[dict[str, Any], dict[str, Any]]  # a run and its report
RECORDED = Path(__file__).parent / "data" / "runs" / "schema1-before-issue-13" / "blocking-sleep"


class _Tables(HTMLParser):
    """The ``<th>`` texts of each table, under the id of the ``h2`` before it."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: dict[str, list[str]] = {}
        self._section = ""
        self._in_th = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "h2":
            self._section = dict(attrs).get("id") or ""
        elif tag == "table":
            self.headers[self._section] = []
        self._in_th = tag == "th"

    def handle_endtag(self, tag: str) -> None:
        self._in_th = False

    def handle_data(self, data: str) -> None:
        if self._in_th:
            self.headers[self._section].append(data)


def html_headers(page: str) -> dict[str, list[str]]:
    parser = _Tables()
    parser.feed(page)
    return parser.headers


def markdown_headers(text: str) -> dict[str, list[str]]:
    """The header row of each table, under its ``##`` heading."""
    out: dict[str, list[str]] = {}
    lines = text.splitlines()
    heading = ""
    for line, below in zip(lines, [*lines[1:], ""], strict=True):
        if line.startswith("## "):
            heading = line[3:]
        elif line.startswith("|") and re.fullmatch(r"\|(---\|)+", below):
            out[heading] = [c.strip() for c in line.strip("|").split("|")]
    return out


def _report(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "verdicts": verdicts(run),
        "model": model_of(run),
        "theory": theory_table(run),
        "canary": canary_damage(run),
    }


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    run = load_run(RECORDED)
    return run, _report(run)


def test_both_formats_show_the_same_tables_with_the_same_headers(recorded: Recorded, tmp_path: Path) -> None:
    run, report = recorded
    tables = [s for s in run_sections(run, report).sections if isinstance(s, Table)]
    assert [t.id for t in tables] == ["model", "what-if", "theory", "canary", "stats"]
    in_html = html_headers(html.run_report(tmp_path, run, report))
    in_md = markdown_headers(markdown.run_report(run, report))
    for t in tables:
        assert t.rows, t.id  # the recorded run fills every table
        assert in_html[t.id] == in_md[t.title] == list(t.headers), t.id
    assert set(in_html) == {t.id for t in tables} and set(in_md) == {t.title for t in tables}


def test_the_p99_factor_is_in_both_and_the_canary_headers_agree(recorded: Recorded, tmp_path: Path) -> None:
    run, report = recorded
    in_html = html_headers(html.run_report(tmp_path, run, report))["canary"]
    md = markdown.run_report(run, report)
    assert in_html == markdown_headers(md)["Collateral damage (canary)"]
    assert "p99 factor" in in_html and "under load p99 ms" in in_html
    p99 = f"{report['canary']['p99_factor']:g}×"
    assert f"| {p99} |" in md


def test_cells_are_formatted_once_for_both(recorded: Recorded, tmp_path: Path) -> None:
    run, report = recorded
    (theory,) = report["theory"]
    page = html.run_report(tmp_path, run, report)
    md = markdown.run_report(run, report)
    ratio = f"{theory['ratio']:.0%}"
    assert f'<td class="n">{ratio}</td>' in page and f"| {ratio} |" in md
    # Every verdict shows in both, with its level.
    for v in report["verdicts"]:
        assert f'class="v {v["level"]}"' in page and f"{markdown.ICON[v['level']]} {v['text']}" in md


def test_a_column_added_to_a_section_shows_in_both_formats(recorded: Recorded) -> None:
    run, report = recorded
    stats = next(s for s in run_sections(run, report).sections if isinstance(s, Table) and s.id == "stats")
    wider = dataclasses.replace(
        stats, headers=(*stats.headers, "max ms"), rows=tuple((*r, f"{i}.5") for i, r in enumerate(stats.rows))
    )
    in_html = html_headers(html.section(wider))["stats"]
    in_md = markdown_headers("\n".join(markdown.section(wider)))["Endpoints (Locust)"]
    assert in_html == in_md == [*stats.headers, "max ms"]
    assert '<td class="n">0.5</td>' in html.section(wider) and "| 0.5 |" in "\n".join(markdown.section(wider))


def test_a_row_must_fill_every_column() -> None:
    with pytest.raises(ValueError, match="2 cells for 3 headers"):
        Table("t", "T", ("a", "b", "c"), (("1", "2"),))


def test_a_run_without_a_canary_says_so_in_both(recorded: Recorded, tmp_path: Path) -> None:
    run, report = recorded
    report = {**report, "canary": None}
    page = html.run_report(tmp_path, run, report)
    md = markdown.run_report(run, report)
    assert 'id="canary"' in page and "canary" not in html_headers(page)
    assert "No canary row in this run." in page and "No canary row in this run." in md
    assert "## Collateral damage (canary)" in md


def test_the_comparison_table_is_shared(tmp_path: Path) -> None:
    row = {"runs": 1, "rps": {"median": 20.0}, "p95_ms": {"median": 300.0}, "canary_p95_ms": None}
    result = {
        "baseline": "a",
        "notes": [],
        "rows": [
            {**row, "name": "a", "sentence": "a: the baseline.", "loop_busy": {"median": 0.7}},
            {**row, "name": "b|c", "sentence": "b: faster.", "loop_busy": None, "rps_ratio": 4.0},
        ],
    }
    table = comparison_table(result)
    page = html.comparison_report(result, {"a": "a/report.html"}, {})
    md = markdown.comparison(result)
    assert html_headers(page)["figures"] == markdown_headers(md)["Figures"] == list(table.headers)
    assert '<a href="a/report.html">a</a>' in page and "| b\\|c |" in md
    assert table.rows[0][-1] == "70%" and table.rows[1][2].startswith("20 · 4")
