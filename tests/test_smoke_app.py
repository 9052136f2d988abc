"""``loadlab smoke --app``: a user's app from its own folder, budgets from its pyproject.toml, and
the function and line that blocked the loop named in the terminal, smoke.md and JUnit XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from loadlab.budgets import BudgetError
from loadlab.gates import APP_DEFAULTS, read_pyproject, resolve_budgets
from tests.helpers import loadlab

APP = """\
import time

from fastapi import FastAPI

app = FastAPI()


@app.get("/items")
async def list_items() -> dict[str, list[int]]:
    return {"items": [1, 2, 3]}


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}
"""
LOCUSTFILE = """\
from locust import FastHttpUser, constant, task


class Shopper(FastHttpUser):
    wait_time = constant(0.01)

    @task
    def items(self) -> None:
        self.client.get("/items")
"""
PYPROJECT = """\
[project]
name = "shop"
version = "0"

[tool.loadlab.smoke]
p95_ms = 250
loop_lag_p99_ms = 20
loop_busy_max = 0.5
"""


def project(tmp_path: Path) -> Path:
    (tmp_path / "shopapp.py").write_text(APP)
    (tmp_path / "locustfile.py").write_text(LOCUSTFILE)
    (tmp_path / "pyproject.toml").write_text(PYPROJECT)
    return tmp_path


def test_budget_from_flag_beats_env_beats_pyproject_beats_default(tmp_path: Path) -> None:
    pyproject = project(tmp_path) / "pyproject.toml"
    env = {"LOADLAB_P95_MS": "111", "LOADLAB_LOOP_LAG_P99_MS": "30"}
    resolved = resolve_budgets({"p95_ms": "99"}, env, pyproject, APP_DEFAULTS)
    assert resolved.values["p95_ms"] == "99" and resolved.sources["p95_ms"] == "flag --p95-ms"
    assert (
        resolved.values["loop_lag_p99_ms"] == "30"
        and resolved.sources["loop_lag_p99_ms"] == "env LOADLAB_LOOP_LAG_P99_MS"
    )
    assert resolved.values["loop_busy_max"] == "0.5"
    assert resolved.sources["loop_busy_max"] == "pyproject.toml [tool.loadlab.smoke]"
    assert resolved.values["p99_ms"] == "600" and resolved.sources["p99_ms"] == "default"
    budgets = resolved.budgets
    assert (budgets.p95_ms, budgets.loop_lag_p99_ms, budgets.loop_busy_max) == (99.0, 30.0, 0.5)
    assert resolved.source_of_check("p95 /items") == "flag --p95-ms"
    # An empty env value turns a default off, and the next places are not consulted.
    off = resolve_budgets({}, {"LOADLAB_P99_MS": ""}, pyproject, APP_DEFAULTS)
    assert "p99_ms" not in off.values and off.budgets.p99_ms is None


def test_endpoint_budgets_as_a_toml_table(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool.loadlab.smoke.endpoint_budgets]\n"/items" = { p95 = 40, p99 = 80 }\n')
    budgets = resolve_budgets({}, {}, pyproject, {}).budgets
    assert budgets.endpoints == {"/items": {"p95": 40.0, "p99": 80.0}}


@pytest.mark.parametrize(
    ("flags", "env", "toml", "named"),
    [
        ({"p95_ms": "fast"}, {}, "", "flag --p95-ms: 'fast' must be a number of ms"),
        ({}, {"LOADLAB_FAIL_RATIO": "2"}, "", "env LOADLAB_FAIL_RATIO: '2' must be a share from 0 to 1"),
        ({}, {}, "[tool.loadlab.smoke]\np95 = 3\n", "unknown key 'p95'"),
        ({}, {}, "[tool.loadlab.smoke]\nloop_busy_max = -1\n", "pyproject.toml [tool.loadlab.smoke]: '-1'"),
        ({"endpoint_budgets": "/x:p90=3"}, {}, "", "'p90=3' must be p95=MS or p99=MS"),
    ],
)
def test_a_bad_budget_names_where_it_was_set(
    tmp_path: Path, flags: dict[str, str], env: dict[str, str], toml: str, named: str
) -> None:
    (tmp_path / "pyproject.toml").write_text(toml)
    with pytest.raises(BudgetError, match=named.replace("[", r"\[").replace("]", r"\]")):
        resolve_budgets(flags, env, tmp_path / "pyproject.toml", APP_DEFAULTS)


def test_bad_budget_syntax_exits_2_with_one_line_before_any_load(tmp_path: Path) -> None:
    project(tmp_path)
    args = ("smoke", "--app", "shopapp:app", "--locustfile", "locustfile.py", "--p99-ms", "12ms")
    proc = loadlab(*args, "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=30)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == ["smoke: flag --p99-ms: '12ms' must be a number of ms"]
    assert not (tmp_path / "out").exists()


def junit_cases(path: Path) -> dict[str, ET.Element]:
    """Parse the JUnit file and check it has the shape the common JUnit schema requires."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    cases: dict[str, ET.Element] = {}
    for suite in root.findall("testsuite"):
        assert suite.get("name")
        found = suite.findall("testcase")
        assert int(suite.get("tests", "-1")) == len(found)
        assert int(suite.get("failures", "-1")) == sum(1 for c in found if c.find("failure") is not None)
        assert int(suite.get("errors", "-1")) == sum(1 for c in found if c.find("error") is not None)
        for case in found:
            assert case.get("name") and case.get("classname") and case.get("time") is not None
            for bad in case.findall("failure") + case.findall("error"):
                assert bad.get("message") and bad.get("type")
            cases[case.get("name", "")] = case
    assert int(root.get("tests", "-1")) == len(cases)
    return cases


@pytest.mark.live
@pytest.mark.slow
def test_user_app_passes_then_a_5ms_sleep_fails_naming_function_and_line(tmp_path: Path) -> None:
    folder = project(tmp_path)
    common = ("--app", "shopapp:app", "--locustfile", "locustfile.py", "--users", "10", "--duration", "5", "-q")
    out = str(tmp_path / "out")

    healthy = loadlab("smoke", *common, "--out", out, "--run", "healthy", "--junit-xml", "h.xml", cwd=folder)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "pyproject.toml [tool.loadlab.smoke]" in healthy.stdout  # which source set a budget
    cases = junit_cases(folder / "h.xml")
    assert {"p95 /items", "p99 /items", "failure ratio", "event-loop lag p99", "event-loop busy"} <= set(cases)
    assert all(c.find("failure") is None for c in cases.values())

    source = (folder / "shopapp.py").read_text()
    (folder / "shopapp.py").write_text(source.replace("    return {", "    time.sleep(0.005)\n    return {", 1))
    line = (folder / "shopapp.py").read_text().splitlines().index("    time.sleep(0.005)") + 1
    where = f"shopapp.py:{line}"

    slow = loadlab("smoke", *common, "--out", out, "--run", "slow", "--junit-xml", "s.xml", cwd=folder)
    assert slow.returncode == 1, slow.stdout + slow.stderr
    assert "broken budget: event-loop" in slow.stdout
    assert f"list_items in {where}" in slow.stdout
    summary = (tmp_path / "out" / "slow" / "smoke.md").read_text()
    assert "FAIL" in summary and f"`list_items` in `{where}`" in summary
    cases = junit_cases(folder / "s.xml")
    failed = [c.find("failure") for c in cases.values() if c.find("failure") is not None]
    assert failed, "no budget failed in the JUnit file"
    for failure in failed:
        assert failure is not None
        message = failure.get("message", "")
        assert "measured" in message and "budget" in message and f"list_items ({where}" in message


def _run(cpu: float, lag_p99: float, p95: float = 10.0) -> dict[str, object]:
    """The keys of run.json a verdict is made of, as a run records them."""
    row = {"name": "/items", "method": "GET", "requests": 500, "failures": 0, "p95_ms": p95, "p99_ms": p95 + 5}
    total = {**row, "name": "Aggregated", "method": ""}
    series = [{"t": float(t), "lag_ms": {"p99": lag_p99}, "locust_cpu_percent": cpu} for t in range(6)]
    return {"stats": [row, total], "timeseries": series}


def test_a_saturated_generator_makes_the_run_invalid_exit_3_and_a_junit_error(tmp_path: Path) -> None:
    from loadlab.gates import SmokeOutcome, StepOutcome, judge_run
    from loadlab.render.gate import junit_xml

    budgets = resolve_budgets({}, {}, tmp_path / "none.toml", APP_DEFAULTS)
    ok, saturated = judge_run(_run(40.0, 3.0), budgets.budgets), judge_run(_run(97.0, 3.0), budgets.budgets)
    assert ok.exit_code == 0 and saturated.exit_code == 3
    step = StepOutcome("run", tmp_path, saturated.exit_code, saturated)
    outcome = SmokeOutcome("app", (step,), budgets, 3, 1.0)
    (tmp_path / "j.xml").write_text(junit_xml(outcome))
    cases = junit_cases(tmp_path / "j.xml")
    error = cases["load generator CPU"].find("error")
    assert error is not None and "measured 97%, budget 90%" in error.get("message", "")


def test_repeats_are_judged_on_their_medians() -> None:
    from loadlab.gates import combine, judge_run

    budgets = resolve_budgets({}, {}, Path("/nonexistent.toml"), APP_DEFAULTS).budgets
    runs = [judge_run(_run(30.0, lag), budgets) for lag in (5.0, 40.0, 8.0)]  # one noisy run
    assert runs[1].exit_code == 1
    combined = combine(runs)
    lag = next(c for c in combined.checks if c.name == "event-loop lag p99")
    assert lag.measured == 8.0 and lag.passed and combined.exit_code == 0
    runs = [judge_run(_run(30.0, lag), budgets) for lag in (50.0, 40.0, 8.0)]
    assert combine(runs).exit_code == 1


def test_pyproject_keys_may_be_written_as_the_flags_are(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.loadlab.smoke]\np95-ms = 250\nloop_lag_p99_ms = 20\n")
    assert read_pyproject(pyproject) == {"p95_ms": "250", "loop_lag_p99_ms": "20"}
