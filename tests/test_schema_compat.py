"""run.json keeps schema_version 1: runs recorded before the run data got its typed home (issue
13) and before a run's health was judged (issue 12) still load, re-render, re-analyse to the same
analysis, summarise and compare. The fixture is a real two-variant suite recorded at commit
cf504c4 (`loadlab profile --variants blocking-sleep,async-sleep -u 6 -t 3`)."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from loadlab.report import reanalyse, render, summary_text, write_comparison
from loadlab.results import aggregated_row, endpoint_rows, load_run, load_users, loop_analysis

FIXTURE = Path(__file__).parent / "data" / "runs" / "schema1-before-issue-13"
VARIANTS = ("blocking-sleep", "async-sleep")
DOCUMENTED_BLOCKER_KEYS = ("function", "file", "line", "handler", "route", "share", "kind")


@pytest.fixture
def old_suite(tmp_path: Path) -> Path:
    suite = tmp_path / "suite"
    shutil.copytree(FIXTURE, suite)
    for variant in VARIANTS:
        packed = suite / variant / "profile.raw.txt.gz"
        (suite / variant / "profile.raw.txt").write_bytes(gzip.decompress(packed.read_bytes()))
        packed.unlink()
    return suite


def test_an_old_run_loads_with_its_documented_keys(old_suite: Path) -> None:
    run = load_run(old_suite / "blocking-sleep")
    assert run["schema_version"] == 1 and run["status"] == "complete"
    total = aggregated_row(run)
    assert total is not None and total["requests"] > 0
    assert [r["name"] for r in endpoint_rows(run)] == ["/io/blocking-sleep"]
    assert load_users(run) == 5
    loop = loop_analysis(run)
    assert loop is not None and loop["blockers"][0]["function"] == "blocking_sleep"
    assert "health" not in run  # recorded before runs were judged; readers must not need it


# Roles added since the old suite was recorded: a thread once "other" may now be told apart.
REFINED_ROLES = {"asgiref executor", "loop executor", "executor thread"}


def same_threads(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> bool:
    """The same threads with the same samples; a role may only have gone from "other" to one of
    the roles added later (the order follows the roles, so it is compared by thread)."""

    def by_key(threads: list[dict[str, Any]]) -> dict[tuple[int, int], dict[str, Any]]:
        return {(t["pid"], t["tid"]): t for t in threads}

    before, after = by_key(old), by_key(new)
    if before.keys() != after.keys() or len(new) != len(old):
        return False
    for key, o in before.items():
        n = after[key]
        if {k: v for k, v in n.items() if k != "role"} != {k: v for k, v in o.items() if k != "role"}:
            return False
        if n["role"] != o["role"] and not (o["role"] == "other" and n["role"] in REFINED_ROLES):
            return False
    return True


def test_an_old_suite_re_renders_summarises_and_compares(old_suite: Path, tmp_path: Path) -> None:
    before = {v: load_run(old_suite / v)["analysis"] for v in VARIANTS}
    reanalyse(old_suite)
    for v in VARIANTS:
        # The same profile, the same answer in every documented key; later analyses only add keys
        # (a blocker's place and routes, a worker function's lock).
        after = load_run(old_suite / v)["analysis"]
        assert (after["samples"], after["native"]) == (before[v]["samples"], before[v]["native"])
        assert same_threads(before[v]["threads"], after["threads"])
        assert after["loop"]["busy_share"] == before[v]["loop"]["busy_share"]
        for old, new in zip(before[v]["loop"]["blockers"], after["loop"]["blockers"], strict=True):
            assert {k: new[k] for k in DOCUMENTED_BLOCKER_KEYS} == {k: old[k] for k in DOCUMENTED_BLOCKER_KEYS}
        for old, new in zip(before[v]["threadpool"]["by_function"], after["threadpool"]["by_function"], strict=True):
            assert {k: new[k] for k in old} == old
    render(old_suite)
    for v in VARIANTS:
        assert (old_suite / v / "report.html").stat().st_size > 0
        verdicts = load_run(old_suite / v)["report"]["verdicts"]
        assert verdicts and all(v_["level"] in ("problem", "warning", "ok") for v_ in verdicts)
    blocking = load_run(old_suite / "blocking-sleep")["report"]["verdicts"]
    assert "blocking_sleep" in blocking[0]["text"]
    text = summary_text(old_suite)
    assert "blocking-sleep" in text and "complete" in text
    comparison = write_comparison([old_suite], tmp_path / "cmp")
    rows = json.loads((comparison.parent / "comparison.json").read_text())["rows"]
    assert [r["name"] for r in rows] == list(VARIANTS)
