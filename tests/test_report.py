"""Analysis on recorded profiles of every kind, theory, verdicts and comparison (pure, fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadlab.analysis.attribution import analyse_profile
from loadlab.analysis.compare import compare
from loadlab.analysis.stacks import read_raw
from loadlab.analysis.theory import ceiling, infer_model, theory_table
from loadlab.analysis.verdicts import verdicts

DATA = Path(__file__).parent / "data"
ROUTES = DATA / "target-app.routes.json"


def analysed(name: str) -> dict[str, Any]:
    return analyse_profile(read_raw(DATA / f"{name}.raw.txt.gz"), routes_file=ROUTES)


@pytest.mark.parametrize(
    ("fixture", "function", "kind"),
    [
        ("asyncio-blocking", "blocking_sleep", "wait"),  # asyncio's own loop, not uvloop
        ("io-blocking", "blocking_sleep", "wait"),  # uvloop, --native: clock_nanosleep at the leaf
        ("io-blocking-nonative", "blocking_sleep", "unknown"),  # no --native: only the watchdog can tell
        ("cpu-async", "burn_cpu", "cpu"),
    ],
)
def test_top_loop_blocker_and_its_kind(fixture: str, function: str, kind: str) -> None:
    top = analysed(fixture)["loop"]["blockers"][0]
    assert (top["function"], top["kind"]) == (function, kind)
    assert top["share"] > 0.4


@pytest.mark.parametrize(
    ("fixture", "function", "route"),
    [
        ("cpu-threadpool", "burn_cpu", "/cpu/threadpool"),
        ("deps-mixed", "write_audit", None),  # a def dependency: no endpoint frame on the worker
        ("io-threadpool", "threadpool_sleep", "/io/threadpool-sleep"),
    ],
)
def test_offloaded_work_is_on_anyio_workers(fixture: str, function: str, route: str | None) -> None:
    analysis = analysed(fixture)
    assert analysis["loop"]["busy_share"] < 0.2
    top = analysis["threadpool"]["by_function"][0]
    assert (top["function"], top["route"]) == (function, route)


def test_kind_comes_from_the_stall_watchdog_without_native_frames() -> None:
    stalls = [{"function": "blocking_sleep", "kind": "wait"}, {"function": "blocking_sleep", "kind": "wait"}]
    analysis = analyse_profile(read_raw(DATA / "io-blocking-nonative.raw.txt.gz"), routes_file=ROUTES, stalls=stalls)
    top = analysis["loop"]["blockers"][0]
    assert (top["kind"], top["kind_from"]) == ("wait", "stall watchdog")


def test_ceilings_follow_littles_law() -> None:
    s = 0.05
    assert ceiling("loop-blocking", s, users=20, tokens=40, workers=1, pool=2) == pytest.approx(20)
    assert ceiling("loop-blocking", s, users=20, tokens=40, workers=2, pool=2) == pytest.approx(40)
    assert ceiling("threadpool", s, users=100, tokens=40, workers=1, pool=2) == pytest.approx(800)
    assert ceiling("threadpool", s, users=20, tokens=40, workers=1, pool=2) == pytest.approx(400)
    assert ceiling("async", s, users=100, tokens=40, workers=1, pool=2) == pytest.approx(2000)
    assert ceiling("cpu (GIL)", s, users=100, tokens=40, workers=1, pool=2) == pytest.approx(20)


def _run(rps: float, busy: float, blockers: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "config": {"users": 21, "workers": 1},
        "stats": [
            {"name": "/io/x", "rps": rps, "p95_ms": 1000 / max(rps, 1), "p50_ms": 50, "p99_ms": 60, "min_ms": 50.0},
            {"name": "/health (canary)", "rps": 2, "p95_ms": 5, "p50_ms": 2.0, "p99_ms": 9.0},
        ],
        "canary_idle": {"p50_ms": 0.5},
        "analysis": {
            "loop": {"busy_share": busy, "blockers": blockers or []},
            "threadpool": {"by_function": [], "average_busy_workers": 0},
            "threads": [],
        },
        "timeseries": [],
        **extra,
    }


BLOCKER = {"function": "slow", "file": "/a/app/routes.py", "line": 3, "route": "/io/x", "share": 0.9, "kind": "wait"}


def test_model_inference_and_theory_table() -> None:
    blocking = _run(19.5, 0.9, [BLOCKER])
    assert infer_model("/io/x", blocking["analysis"]) == "loop-blocking"
    (row,) = theory_table(blocking)
    assert row["model"] == "loop-blocking" and row["predicted_rps"] == pytest.approx(20)
    assert row["ratio"] == pytest.approx(19.5 / 20, rel=0.01)
    assert infer_model("/io/x", _run(390, 0.05)["analysis"]) == "async"


def test_verdicts_say_what_to_do() -> None:
    waits = " ".join(v["text"] for v in verdicts(_run(19.5, 0.9, [BLOCKER])))
    assert "`slow`" in waits and "90%" in waits and "run_in_threadpool" in waits
    computes = " ".join(v["text"] for v in verdicts(_run(19.5, 0.9, [{**BLOCKER, "kind": "cpu"}])))
    assert "process pool" in computes and "GIL" in computes
    healthy = verdicts(_run(390, 0.03))
    assert not [v for v in healthy if v["level"] == "problem"]
    assert any(v["level"] == "ok" and "No function of yours" in v["text"] for v in healthy)


def test_saturated_threadpool_and_small_pool_are_named() -> None:
    full = [{"t": i, "threadpool": {"borrowed": 40, "total": 40, "waiting": 12}} for i in range(5)]
    run = _run(700, 0.05, timeseries=full)
    run["analysis"]["threadpool"]["by_function"] = [
        {"function": "pooled_resource", "route": None, "average_busy_workers": 30.0, "lock_wait_share": 0.9}
    ]
    text = " ".join(v["text"] for v in verdicts(run))
    assert "saturated" in text and "up to 12 tasks queued" in text
    assert "`pooled_resource`" in text and "resource pool" in text


def test_comparison_ranks_and_respects_noise() -> None:
    runs = [
        ("blocking", _run(19.0, 0.9, [BLOCKER])),
        ("blocking", _run(20.0, 0.92, [BLOCKER])),
        ("threadpool", _run(760.0, 0.02)),
        ("threadpool", _run(790.0, 0.03)),
        ("same", _run(19.5, 0.9, [BLOCKER])),
        ("same", _run(20.5, 0.9, [BLOCKER])),
    ]
    result = compare(runs)
    rows = {r["name"]: r for r in result["rows"]}
    assert result["baseline"] == "blocking"
    assert rows["blocking"]["runs"] == 2 and rows["blocking"]["rps"]["median"] == pytest.approx(19.5)
    assert rows["threadpool"]["rps_ratio"] == pytest.approx(775 / 19.5, rel=0.01)
    assert rows["threadpool"]["rps_significant"] is True
    assert rows["same"]["rps_significant"] is False
    assert "40× the throughput of blocking" in rows["threadpool"]["sentence"]
    assert "loop busy 91% → 2%" in rows["threadpool"]["sentence"]
    assert "not significantly different" in rows["same"]["sentence"]
