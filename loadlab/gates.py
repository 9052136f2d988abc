"""``loadlab smoke``'s budgets and where each came from, and the verdict of a stored run.

Each budget is taken from the first place that sets it: a flag, a ``LOADLAB_*`` env var, the
app's ``pyproject.toml`` under ``[tool.loadlab.smoke]``, then loadlab's default. The verdict of a
run is :func:`loadlab.budgets.evaluate` over what the run recorded in ``run.json``; what held the
loop comes from :mod:`loadlab.analysis.culprits`. Data only: :mod:`loadlab.render.gate` presents it.
"""

from __future__ import annotations

import math
import statistics
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from loadlab.analysis.culprits import Culprit
from loadlab.budgets import PERCENTILES, BudgetError, Budgets, Check, GateVerdict, RowStats, evaluate
from loadlab.budgets import parse_endpoint_budgets as _parse_endpoints
from loadlab.results import AGGREGATED, loop_analysis

PYPROJECT_TABLE = "[tool.loadlab.smoke]"
SETTLE_S = 2.0  # the first seconds' lag windows still show the app's start-up, as in loadtests.appstate


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(text)
    return value


def _share(text: str) -> float:
    value = _number(text)
    if value > 1:
        raise ValueError(text)
    return value


@dataclass(frozen=True)
class BudgetSetting:
    """One budget: its key in ``pyproject.toml``, its flag and env var, and how to read a value."""

    key: str
    what: str  # said in an error: "a number of ms", "a share from 0 to 1"
    read: Callable[[str], Any]

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return "LOADLAB_" + self.key.upper()


SETTINGS: tuple[BudgetSetting, ...] = (
    BudgetSetting("p95_ms", "a number of ms", _number),
    BudgetSetting("p99_ms", "a number of ms", _number),
    BudgetSetting("endpoint_budgets", "'NAME:p95=120,p99=250;NAME2:p99=400'", _parse_endpoints),
    BudgetSetting("fail_ratio", "a share from 0 to 1", _share),
    BudgetSetting("loop_lag_p99_ms", "a number of ms", _number),
    BudgetSetting("loop_busy_max", "a share from 0 to 1", _share),
)
SETTING = {s.key: s for s in SETTINGS}

APP_DEFAULTS: Mapping[str, str] = {
    "p95_ms": "300",
    "p99_ms": "600",
    "fail_ratio": "0.01",
    "loop_lag_p99_ms": "25",
}
"""Generous for a 2-core CI machine: a healthy route stays far below, a blocked loop far above."""


@dataclass(frozen=True)
class ResolvedBudgets:
    """The budgets of a smoke run: each key's value as given (text) and where it came from."""

    values: Mapping[str, str]
    sources: Mapping[str, str]

    @property
    def budgets(self) -> Budgets:
        read = {k: SETTING[k].read(v) for k, v in self.values.items()}
        return Budgets(
            p95_ms=read.get("p95_ms"),
            p99_ms=read.get("p99_ms"),
            fail_ratio=read.get("fail_ratio"),
            loop_lag_p99_ms=read.get("loop_lag_p99_ms"),
            loop_busy_max=read.get("loop_busy_max"),
            endpoints=read.get("endpoint_budgets") or {},
        )

    def env(self) -> dict[str, str]:
        """The ``LOADLAB_*`` variables the Locust-side gates (:mod:`loadtests.thresholds`) read."""
        return {SETTING[k].env: v for k, v in self.values.items() if k != "loop_busy_max"}

    def source_of_check(self, name: str) -> str:
        """Which setting a check's budget came from (a check is named like ``p95 /orders``)."""
        if name == "event-loop lag p99":
            return self.sources.get("loop_lag_p99_ms", "")
        if name == "event-loop busy":
            return self.sources.get("loop_busy_max", "")
        if name == "failure ratio":
            return self.sources.get("fail_ratio", "")
        pct, _, row = name.partition(" ")
        if pct in PERCENTILES:
            endpoints = self.budgets.endpoints
            if any((row == n or row.endswith(f" {n}")) and pct in endpoints[n] for n in endpoints):
                return self.sources.get("endpoint_budgets", "")
            return self.sources.get(f"{pct}_ms", "")
        return "loadlab"  # requests made, generator CPU: a run that cannot be judged otherwise


def read_pyproject(path: Path) -> dict[str, str]:
    """``[tool.loadlab.smoke]`` of ``path`` as text values; ``{}`` if the file or table is absent."""
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BudgetError(f"{path}: not valid TOML ({exc})") from None
    smoke = table.get("tool", {}).get("loadlab", {}).get("smoke", {})
    if not isinstance(smoke, dict):
        raise BudgetError(f"{path}: {PYPROJECT_TABLE} must be a table")
    out: dict[str, str] = {}
    for key, value in smoke.items():
        key = key.replace("-", "_")  # p95-ms as the flag reads, or p95_ms: both, as TOML users write either
        if key not in SETTING:
            known = ", ".join(SETTING)
            raise BudgetError(f"{path} {PYPROJECT_TABLE}: unknown key {key!r}; the budgets are {known}")
        if key == "endpoint_budgets" and isinstance(value, dict):
            value = ";".join(
                f"{name}:" + ",".join(f"{p}={v}" for p, v in limits.items()) for name, limits in value.items()
            )
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise BudgetError(f"{path} {PYPROJECT_TABLE}: {key} must be {SETTING[key].what}, not {value!r}")
        out[key] = str(value)
    return out


def resolve_budgets(
    flags: Mapping[str, str | None],
    environ: Mapping[str, str],
    pyproject: Path,
    defaults: Mapping[str, str],
) -> ResolvedBudgets:
    """Each budget from the first place that sets it: flag, env var, ``pyproject``, default.

    Every value is read here, so a typo stops the smoke before any load, with the place to fix.
    An empty value (``--p95-ms ""``, ``LOADLAB_P95_MS=``) turns a default off.
    """
    from_file = read_pyproject(pyproject)
    values: dict[str, str] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        for value, source in (
            (flags.get(s.key), f"flag {s.flag}"),
            (environ.get(s.env), f"env {s.env}"),
            (from_file.get(s.key), f"{pyproject.name} {PYPROJECT_TABLE}"),
            (defaults.get(s.key), "default"),
        ):
            if value is None:
                continue
            if value.strip():
                try:
                    s.read(value.strip())
                except (ValueError, BudgetError) as exc:
                    detail = f" ({exc})" if isinstance(exc, BudgetError) else ""
                    raise BudgetError(f"{source}: {value!r} must be {s.what}{detail}") from None
                values[s.key], sources[s.key] = value.strip(), source
            break
    return ResolvedBudgets(values, sources)


def loop_busy(run: Mapping[str, Any]) -> tuple[float | None, str]:
    """The share of the run the loop spent busy, and what measured it: py-spy's busy share of
    the loop thread when it ran, else the loop sampler's share of samples in the app's code."""
    loop = loop_analysis(dict(run))
    if loop and loop.get("busy_share") is not None:
        return loop["busy_share"], "py-spy"
    samples = run.get("loop_samples") or {}
    ticks = int(samples.get("ticks") or 0)
    if not ticks:
        return None, "not measured"
    busy = sum(int(s.get(k) or 0) for s in samples.get("samples", []) for k in ("cpu", "wait", "gil"))
    return busy / ticks, "loop sampler"


def loop_lag_p99(run: Mapping[str, Any]) -> float | None:
    """The worst one-second lag p99 the app reported under load, past the settling seconds."""
    points = [p for p in run.get("timeseries") or [] if isinstance(p.get("lag_ms"), dict)]
    settled = [p for p in points if float(p.get("t", 0)) >= SETTLE_S] or points
    values = [float(p["lag_ms"]["p99"]) for p in settled if p["lag_ms"].get("p99") is not None]
    return max(values) if values else None


def generator_cpu(run: Mapping[str, Any]) -> float:
    """Locust's average CPU % over the run (its own process), from the harness's readings."""
    values = [float(p["locust_cpu_percent"]) for p in run.get("timeseries") or [] if "locust_cpu_percent" in p]
    return statistics.fmean(values[1:] or values) if values else 0.0


def row_stats(run: Mapping[str, Any]) -> list[RowStats]:
    return [
        RowStats(
            name=s["name"], method=s.get("method") or "", requests=int(s.get("requests") or 0),
            failures=int(s.get("failures") or 0), p95_ms=float(s.get("p95_ms") or 0.0),
            p99_ms=float(s.get("p99_ms") or 0.0),
        )
        for s in run.get("stats") or []
        if s["name"] != AGGREGATED
    ]  # fmt: skip


def judge_run(run: Mapping[str, Any], budgets: Budgets) -> GateVerdict:
    """A stored run (``run.json``) judged against ``budgets``, as the Locust-side gates would."""
    return evaluate(
        budgets,
        row_stats(run),
        loop_lag_p99_ms=loop_lag_p99(run),
        generator_cpu=generator_cpu(run),
        loop_busy=loop_busy(run)[0],
    )


def combine(verdicts: Sequence[GateVerdict]) -> GateVerdict:
    """Repeats of one smoke as one verdict: each check's median, judged against its budget."""
    if len(verdicts) == 1:
        return verdicts[0]
    names = list(dict.fromkeys(c.name for v in verdicts for c in v.checks))
    checks = []
    for name in names:
        same = [c for v in verdicts for c in v.checks if c.name == name]
        measured = [c.measured for c in same if c.measured is not None]
        median = statistics.median(measured) if len(measured) == len(same) else None
        first = same[0]
        if median is None:
            passed = False
        elif first.unit == "requests":
            passed = median >= first.budget
        else:
            passed = median <= first.budget
        checks.append(replace(first, measured=median, passed=passed))
    return GateVerdict(tuple(checks), valid=all(v.valid for v in verdicts))


def as_checks(verdict_json: Mapping[str, Any]) -> GateVerdict:
    """A ``thresholds.json`` written by the Locust-side gates, read back."""
    checks = tuple(Check(**c) for c in verdict_json.get("checks", []))
    return GateVerdict(checks, valid=bool(verdict_json.get("valid", True)))


@dataclass(frozen=True)
class StepOutcome:
    """One judged load run of a smoke: its verdict (None if none was written), what blocked the
    loop, and the run folder."""

    name: str
    folder: Path
    exit_code: int
    verdict: GateVerdict | None
    culprits: tuple[Culprit, ...] = ()
    error: str | None = None

    @property
    def culprit(self) -> Culprit | None:
        """The one to name in a failure message: the first of the most telling source."""
        return self.culprits[0] if self.culprits else None


@dataclass(frozen=True)
class SmokeOutcome:
    """A whole smoke: what was loaded, its steps, its budgets and sources, its exit code."""

    title: str
    steps: tuple[StepOutcome, ...]
    budgets: ResolvedBudgets
    exit_code: int
    seconds: float
    notes: tuple[str, ...] = ()
    gate: Mapping[str, Any] | None = None  # the baseline gate's result (loadlab.analysis.regress.judge)

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "passed": self.passed,
            "exit_code": self.exit_code,
            "seconds": self.seconds,
            "budgets": dict(self.budgets.values),
            "budget_sources": dict(self.budgets.sources),
            "notes": list(self.notes),
            "baseline_gate": None if self.gate is None else {k: self.gate[k] for k in ("regressed", "method")},
            "steps": [
                {
                    "name": s.name,
                    "folder": s.folder.name,
                    "exit_code": s.exit_code,
                    "error": s.error,
                    "verdict": s.verdict.to_json() if s.verdict else None,
                    "culprits": [asdict(c) for c in s.culprits],
                }
                for s in self.steps
            ],
        }


def exit_code_of(codes: Sequence[int]) -> int:
    """0 if every step passed, 3 if one was invalid (the generator saturated), else 1."""
    return 0 if all(c == 0 for c in codes) else (3 if 3 in codes else 1)
