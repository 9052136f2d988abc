"""The tour's judging, on synthetic run records (the runs themselves are ordinary runs)."""

from __future__ import annotations

from typing import Any

import pytest

from loadlab.tour import RUNS, judge, what_if_lines, what_ifs


def run(rps: float, busy: float | None = None, canary_p50: float = 1.0, top: str | None = None) -> dict[str, Any]:
    blockers = [{"function": top, "file": "/app/x.py", "share": busy or 0}] if top else []
    return {
        "stats": [
            {"name": "/x", "rps": rps, "p50_ms": 50, "p99_ms": 60},
            {"name": "/health (canary)", "rps": 2, "p50_ms": canary_p50, "p99_ms": canary_p50},
        ],
        "canary_idle": {"p50_ms": 0.5},
        "analysis": {"loop": {"busy_share": busy, "blockers": blockers}} if busy is not None else None,
    }


def as_page_says() -> dict[str, dict[str, Any]]:
    return {
        "blocking-sleep": run(20, 0.88, 600, "blocking_sleep"),
        "async-sleep": run(370, 0.1),
        "threadpool-sleep": run(350, 0.2, 3),
        "helper-sleep": run(20, 0.87, 600, "sync_helper_sleep"),
        "offload-sleep": run(360, 0.1, 3),
        "cpu-async": run(30, 0.9, 500, "burn_cpu"),
        "deps-sync": run(340, 0.15, 2),
        "trivial-async": run(1500),
        "trivial-sync": run(900),
        "cpu-threadpool": run(21),
        "cpu-process": run(32),
    }


def test_every_run_of_the_tour_is_judged() -> None:
    assert {r.name for r in RUNS} == set(as_page_says())


def test_claims_confirmed_with_their_numbers() -> None:
    verdicts = {v["claim_id"]: v for v in judge(as_page_says())}
    assert [verdicts[k]["verdict"] for k in "12346"] == ["confirmed"] * 5
    assert "served 20 req/s against 370" in verdicts["1"]["measurement"]
    assert "`sync_helper_sleep`" in verdicts["4"]["measurement"]
    # 1/900 - 1/1500 s = 444 µs: far more than the page's 100 ns.
    assert verdicts["5"]["verdict"] == "more nuanced" and "444 µs" in verdicts["5"]["measurement"]


def test_claims_refuted_when_the_measurement_disagrees() -> None:
    runs = as_page_says()
    runs["blocking-sleep"] = run(360, 0.1, 1)  # a blocking route that did not block
    runs["cpu-process"] = run(20)  # processes no faster than threads
    verdicts = {v["claim_id"]: v["verdict"] for v in judge(runs)}
    assert verdicts["1"] == "refuted" and verdicts["6"] == "refuted"


def test_a_missing_run_is_inconclusive_not_a_crash() -> None:
    runs = as_page_says()
    del runs["deps-sync"]
    assert {v["claim_id"]: v["verdict"] for v in judge(runs)}["3"] == "inconclusive"


def blocking_demands(function: str, route: str) -> dict[str, Any]:
    """A blocking run's ``demands``: 19 users, no think time, 50 ms on the loop per request."""
    part = {"function": function, "kind": "wait", "share": 0.9, "demands_ms": {route: 50.0}}
    return {
        "users": 19,
        "think_ms": 0.0,
        "measured_rps": 19.6,
        "measured_ms": 960.0,
        "routes": {route: {"share": 1.0, "delay_ms": 1.0, "measured_rps": 19.6, "measured_ms": 960.0}},
        "stations": [
            {"name": "event loop", "kind": "loop", "servers": 1, "demands_ms": {route: 50.0}, "parts": [part]}
        ],
        "process_pool": 2,
    }


def test_each_twin_is_predicted_from_the_blocking_run() -> None:
    runs = as_page_says()
    runs["blocking-sleep"]["demands"] = blocking_demands("blocking_sleep", "/x")
    runs["threadpool-sleep"]["stats"][0]["rps"] = 350.0
    (check,) = what_ifs(runs)  # the other pairs' blocking runs have no demands: left out
    assert (check["from"], check["twin"], check["to"]) == ("blocking-sleep", "threadpool-sleep", "the threadpool")
    # 19 users, 51 ms each, hardly any queueing (40 threads): about 19 / 0.051 s.
    assert check["predicted_rps"] == pytest.approx(19 / 0.051, rel=0.03)
    assert check["measured_rps"] == 350.0 and check["ratio"] == pytest.approx(350 / check["predicted_rps"], rel=0.01)
    (line,) = what_if_lines([check])
    assert "blocking-sleep → threadpool-sleep" in line and "`blocking_sleep`" in line and "measured 350" in line
