"""The Locust scenarios, run as Locust subprocesses against a live app; the budget rules in-process.

Every ``loadtests/*_routes.py`` is run headless for a few seconds (the list is globbed, so a new
locustfile is exercised as soon as it exists, and fails here if it requests nothing). Locust is
never imported in this process: importing it would monkey-patch pytest with gevent.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadlab.config import with_checkout_on_path
from loadtests.budgets import BudgetError, Budgets, RowStats, evaluate, parse_endpoint_budgets
from tests.conftest import Server

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"
LOCUSTFILES = sorted(LOADTESTS.glob("*_routes.py"))
CANARY = "/health (canary)"


@dataclass
class LocustRun:
    returncode: int
    output: str
    rows: dict[tuple[str, str], dict[str, object]]
    folder: Path

    def row(self, name: str, method: str = "GET") -> dict[str, object]:
        assert (name, method) in self.rows, f"no row {method} {name}; rows: {sorted(self.rows)}\n{self.output}"
        return self.rows[(name, method)]

    def mean_ms(self, name: str, method: str = "GET") -> float:
        row = self.row(name, method)
        return float(row["total_response_time"]) / max(1, int(row["num_requests"]))  # type: ignore[arg-type]


def run_locust(locustfile: Path, host: str, folder: Path, args: Sequence[str], timeout: float = 60) -> LocustRun:
    """One headless Locust process; its stats come back from ``--json-file``."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile), "-H", host, "--headless", "--only-summary"]
    argv += ["--json-file", str(folder / "stats"), "--stop-timeout", "3", *args]
    # Run from its own folder; the locustfiles import the loadtests package from the checkout.
    env = with_checkout_on_path(dict(os.environ))
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=folder, env=env)
    stats_path = folder / "stats.json"
    rows = {}
    if stats_path.is_file():
        rows = {(r["name"], r["method"]): r for r in json.loads(stats_path.read_text())}
    return LocustRun(proc.returncode, proc.stdout + proc.stderr, rows, folder)


def routes_in(locustfile: Path) -> set[str]:
    """The paths a locustfile requests: the literal ``"/family/variant"`` strings in its tasks."""
    return set(re.findall(r'self\.(?:hit|stream)\("(/[a-z-]+/[a-z-]+)"', locustfile.read_text()))


@pytest.fixture(scope="module")
def family_runs(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LocustRun]:
    """Every locustfile for 4 s with 3 users (2 + the canary), three files at a time."""
    base = tmp_path_factory.mktemp("families")

    def one(path: Path) -> tuple[str, LocustRun]:
        args = ["-u", "3", "-r", "10", "-t", "4s", "--ms", "20", "--work", "5", "--rows", "100", "--kb", "64"]
        return path.name, run_locust(path, server.url, base / path.stem, args)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, LOCUSTFILES))


def test_every_family_has_a_locustfile() -> None:
    families = {"io", "cpu", "trivial", "deps", "db", "upstream", "files", "stream", "background"}
    assert {p.name.removesuffix("_routes.py") for p in LOCUSTFILES} >= families


@pytest.mark.live
@pytest.mark.parametrize("locustfile", LOCUSTFILES, ids=lambda p: p.stem)
def test_locustfile_runs_every_variant_and_the_canary(locustfile: Path, family_runs: dict[str, LocustRun]) -> None:
    text = locustfile.read_text()
    assert text.startswith('"""'), "a locustfile starts with a docstring saying what it exercises"
    assert "run_single_user(" in text and "(LoadlabUser)" in text  # FastHttpUser, shared pieces
    routes = routes_in(locustfile)
    assert routes, f"{locustfile.name} requests no /family/variant route this test can see"
    run = family_runs[locustfile.name]
    assert run.returncode == 0, run.output[-3000:]
    for name in routes | {CANARY}:
        row = run.row(name)
        assert int(row["num_requests"]) > 0, f"{name}: no request in {locustfile.name}"  # type: ignore[call-overload]
        assert int(row["num_failures"]) == 0, f"{name}: failures\n{run.output[-2000:]}"  # type: ignore[call-overload]


@pytest.mark.live
def test_tags_pick_variants_and_keep_the_canary(server: Server, tmp_path: Path) -> None:
    run = run_locust(LOADTESTS / "io_routes.py", server.url, tmp_path, ["-u", "3", "-t", "3s", "-T", "blocking"])
    assert run.returncode == 0, run.output[-2000:]
    names = {name for name, method in run.rows if method == "GET"}
    assert names == {"/io/blocking-sleep", "/io/helper-sleep", CANARY}


@pytest.mark.live
def test_step_shape_climbs_through_the_user_counts_it_promises(server: Server, tmp_path: Path) -> None:
    args = ["--shape", "step", "--step-users", "2,4,6", "--step-seconds", "2", "--csv", str(tmp_path / "run")]
    run = run_locust(LOADTESTS / "trivial_routes.py", server.url, tmp_path, [*args, "--wait-ms", "50"])
    assert run.returncode == 0, run.output[-2000:]
    with open(tmp_path / "run_stats_history.csv") as f:
        counts = [int(r["User Count"]) for r in csv.DictReader(f)]
    seen = [c for i, c in enumerate(counts) if c and (i == 0 or c != counts[i - 1])]
    assert seen == [2, 4, 6], counts


@pytest.mark.live
def test_open_model_corrected_latency_shows_the_stalls_measured_latency_hides(server: Server, tmp_path: Path) -> None:
    # 40 req/s scheduled on a route that serves ~20/s one at a time: requests fall due while their
    # user still waits, so latency counted from the intended start must exceed the measured one.
    args = ["-u", "5", "-r", "20", "-t", "5s", "-T", "blocking", "--arrival-rate", "40", "--ms", "50"]
    run = run_locust(LOADTESTS / "io_routes.py", server.url, tmp_path, args)
    assert run.returncode == 0, run.output[-2000:]
    for name in ("/io/blocking-sleep", "/io/helper-sleep"):
        measured, corrected = run.row(name), run.row(name, "corrected")
        assert corrected["num_requests"] == measured["num_requests"]
        assert run.mean_ms(name, "corrected") >= 1.5 * run.mean_ms(name)
        assert float(corrected["max_response_time"]) >= float(measured["max_response_time"])  # type: ignore[arg-type]
    assert (CANARY, "corrected") not in run.rows  # the canary keeps its own fixed rate


@pytest.mark.live
def test_a_bad_budget_stops_the_run_before_it_starts(server: Server, tmp_path: Path) -> None:
    run = run_locust(LOADTESTS / "trivial_routes.py", server.url, tmp_path, ["--endpoint-budgets", "/x:p90=1"])
    assert run.returncode != 0
    assert "p95=MS or p99=MS" in run.output


def row(name: str, p95: float, p99: float, requests: int = 100, failures: int = 0, method: str = "GET") -> RowStats:
    return RowStats(name, method, requests, failures, p95, p99)


def test_endpoint_budgets_parse_names_with_spaces() -> None:
    spec = "/health (canary):p95=50,p99=80; /io/async-sleep:p99=300"
    assert parse_endpoint_budgets(spec) == {
        "/health (canary)": {"p95": 50, "p99": 80},
        "/io/async-sleep": {"p99": 300},
    }
    for bad in ("/x", "/x:p90=1", "/x:p95=fast"):
        with pytest.raises(BudgetError):
            parse_endpoint_budgets(bad)


def test_verdict_names_the_broken_budget_and_sets_exit_code_1() -> None:
    budgets = Budgets(p95_ms=200, endpoints={CANARY: {"p95": 50}}, loop_lag_p99_ms=25)
    rows = [row("/io/async-sleep", 60, 80), row(CANARY, 400, 500)]
    verdict = evaluate(budgets, rows, loop_lag_p99_ms=3.0, generator_cpu=20)
    assert (verdict.passed, verdict.valid, verdict.exit_code) == (False, True, 1)
    assert [c.name for c in verdict.broken] == [f"p95 {CANARY}"]
    assert f"p95 {CANARY}: 400.0 ms > 50.0 ms" in verdict.table()
    assert set(verdict.to_json()) == {"passed", "valid", "checks"}


def test_overloaded_generator_makes_the_run_invalid_not_passed() -> None:
    verdict = evaluate(Budgets(), [row("/a", 1, 1)], loop_lag_p99_ms=None, generator_cpu=97)
    assert (verdict.passed, verdict.valid, verdict.exit_code) == (False, False, 3)
    assert "INVALID" in verdict.summary()


def test_unmeasured_loop_lag_fails_its_budget_and_failures_count() -> None:
    budgets = Budgets(loop_lag_p99_ms=25, fail_ratio=0.01)
    verdict = evaluate(budgets, [row("/a", 1, 1, requests=100, failures=5)], loop_lag_p99_ms=None, generator_cpu=5)
    assert {c.name for c in verdict.broken} == {"event-loop lag p99", "failure ratio"}
    healthy = evaluate(budgets, [row("/a", 1, 1)], loop_lag_p99_ms=2.0, generator_cpu=5)
    assert healthy.passed and healthy.exit_code == 0
