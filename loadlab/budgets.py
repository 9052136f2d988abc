"""Budgets and verdicts for the CI smoke gates: pure data and functions, no Locust import.

:mod:`loadtests.thresholds` collects the measurements inside the Locust process and hands them
here, and ``loadlab smoke --app`` hands it what a run recorded in ``run.json``; keeping the rules
apart lets them be tested in-process (importing ``locust`` would monkey-patch the test runner with
gevent).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

PERCENTILES = ("p95", "p99")


class BudgetError(ValueError):
    """A budget setting cannot be read; the message says which and what it takes."""


@dataclass(frozen=True)
class Budgets:
    """What a run must stay within. ``None`` means "not checked"."""

    p95_ms: float | None = None
    p99_ms: float | None = None
    fail_ratio: float | None = 0.01
    loop_lag_p99_ms: float | None = None
    loop_busy_max: float | None = None
    """Share (0–1) of the run the event loop may spend in the app's code; judged by ``loadlab smoke``."""
    max_generator_cpu: float = 90.0
    endpoints: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    """Per-row overrides: ``{"/io/async-sleep": {"p95": 120.0}}``, keyed by the row's name."""

    def latency_budget(self, name: str, percentile: str) -> float | None:
        own = self.endpoints.get(name, {})
        if percentile in own:
            return own[percentile]
        return self.p95_ms if percentile == "p95" else self.p99_ms


def parse_endpoint_budgets(spec: str | None) -> dict[str, dict[str, float]]:
    """Read ``"NAME:p95=120,p99=250;OTHER NAME:p99=400"`` into ``{NAME: {"p95": 120, ...}}``.

    Names are Locust row names (``name=`` of the request); they may contain spaces but not ``;``.
    The last ``:`` of an entry separates the name from its budgets.
    """
    budgets: dict[str, dict[str, float]] = {}
    for entry in (spec or "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        name, sep, limits = entry.rpartition(":")
        if not sep or not name.strip():
            raise BudgetError(f"endpoint budget {entry!r} must look like 'NAME:p95=120,p99=250'")
        own = budgets.setdefault(name.strip(), {})
        for item in limits.split(","):
            key, eq, value = item.strip().partition("=")
            if key not in PERCENTILES or not eq:
                raise BudgetError(f"endpoint budget {entry!r}: {item.strip()!r} must be p95=MS or p99=MS")
            try:
                own[key] = float(value)
            except ValueError:
                raise BudgetError(f"endpoint budget {entry!r}: {value!r} is not a number of ms") from None
    return budgets


@dataclass(frozen=True)
class RowStats:
    """One Locust stats row: ``method`` is GET, or ``corrected`` for open-model rows."""

    name: str
    method: str
    requests: int
    failures: int
    p95_ms: float
    p99_ms: float

    @property
    def label(self) -> str:
        return self.name if self.method == "GET" else f"{self.method} {self.name}"


@dataclass(frozen=True)
class Check:
    name: str
    budget: float
    measured: float | None
    passed: bool
    unit: str = "ms"


@dataclass(frozen=True)
class GateVerdict:
    """All checks of one run. ``valid`` is False when the load generator could not be trusted."""

    checks: tuple[Check, ...]
    valid: bool

    @property
    def passed(self) -> bool:
        return self.valid and all(c.passed for c in self.checks)

    @property
    def broken(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def exit_code(self) -> int:
        """0 passed, 1 a budget broke, 3 the run is invalid (the generator was overloaded)."""
        if not self.valid:
            return 3
        return 0 if self.passed else 1

    def to_json(self) -> dict[str, object]:
        return {"passed": self.passed, "valid": self.valid, "checks": [asdict(c) for c in self.checks]}

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    def table(self) -> str:
        """A short text table: budget, measured value, pass/fail; then one line per broken budget."""
        width = max([len(c.name) for c in self.checks] + [6])
        lines = [f"{'budget':<{width}}  {'limit':>10}  {'measured':>10}  result"]
        for c in self.checks:
            lines.append(
                f"{c.name:<{width}}  {format_value(c.budget, c.unit):>10}  {format_value(c.measured, c.unit):>10}  "
                f"{'pass' if c.passed else 'FAIL'}"
            )
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        if self.passed:
            return f"loadlab thresholds: PASSED ({len(self.checks)} checks)"
        why = "; ".join(
            f"{c.name}: {format_value(c.measured, c.unit)} > {format_value(c.budget, c.unit)}"
            if c.measured is not None
            else f"{c.name}: not measured"
            for c in self.broken
        )
        head = "INVALID run (load generator overloaded)" if not self.valid else "FAILED"
        return f"loadlab thresholds: {head} — broken budget: {why}"


def format_value(value: float | None, unit: str) -> str:
    """A measured value or budget as a person reads it: ``12.3 ms``, ``1.00%``, ``85%``."""
    if value is None:
        return "n/a"
    if unit == "ratio":
        return f"{value:.2%}"
    if unit == "%":
        return f"{value:.0f}%"
    if unit == "requests":
        return f"{value:.0f}"
    return f"{value:.1f} ms"


def evaluate(
    budgets: Budgets,
    rows: Iterable[RowStats],
    *,
    loop_lag_p99_ms: float | None,
    generator_cpu: float,
    loop_busy: float | None = None,
) -> GateVerdict:
    """Turn the measurements of a run into checks against ``budgets``.

    ``loop_lag_p99_ms`` is ``None`` when the app's ``/debug/loop`` could not be read; a lag
    budget then fails, as an unmeasured gate must not pass (so does a busy budget without
    ``loop_busy``).
    """
    rows = [r for r in rows if r.requests > 0]
    checks: list[Check] = []
    total = sum(r.requests for r in rows if r.method != "corrected")
    checks.append(Check("requests made", 1, total, total >= 1, unit="requests"))
    for row in rows:
        for pct in PERCENTILES:
            limit = budgets.latency_budget(row.name, pct)
            if limit is not None:
                measured = row.p95_ms if pct == "p95" else row.p99_ms
                checks.append(Check(f"{pct} {row.label}", limit, measured, measured <= limit))
    if budgets.fail_ratio is not None:
        failures = sum(r.failures for r in rows if r.method != "corrected")
        ratio = failures / total if total else 0.0
        checks.append(Check("failure ratio", budgets.fail_ratio, ratio, ratio <= budgets.fail_ratio, "ratio"))
    if budgets.loop_lag_p99_ms is not None:
        ok = loop_lag_p99_ms is not None and loop_lag_p99_ms <= budgets.loop_lag_p99_ms
        checks.append(Check("event-loop lag p99", budgets.loop_lag_p99_ms, loop_lag_p99_ms, ok))
    if budgets.loop_busy_max is not None:
        ok = loop_busy is not None and loop_busy <= budgets.loop_busy_max
        checks.append(Check("event-loop busy", budgets.loop_busy_max, loop_busy, ok, "ratio"))
    cpu_ok = math.isfinite(generator_cpu) and generator_cpu <= budgets.max_generator_cpu
    checks.append(Check("load generator CPU", budgets.max_generator_cpu, generator_cpu, cpu_ok, unit="%"))
    return GateVerdict(tuple(checks), valid=cpu_ok and total >= 1)
