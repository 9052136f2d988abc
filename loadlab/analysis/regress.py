"""The baseline gate: did CURRENT get worse than BASELINE by more than the rules allow, and more
than the noise? And which functions that held the event loop appeared, grew or vanished?

Rules (``--fail-on``) are ``METRIC:±N UNIT`` joined by commas: ``rps:-10%`` fails when throughput
falls by more than 10 %, ``p95:+20%`` when the slowest endpoint's p95 grows by more than 20 %,
``loop_busy:+10pp`` when the loop's busy share grows by more than 10 percentage points,
``loop_lag:+15ms`` when the loop-lag p99 grows by more than 15 ms. The sign says which way is
worse. Units: ``%`` (relative, any metric), ``pp`` (shares: ``loop_busy``, ``fail_ratio``),
``ms`` (times: ``p95``, ``p99``, ``loop_lag``).

The decision (stated in every result): the medians of the per-run figures are set against the
rule; with at least :data:`MIN_RUNS_FOR_TEST` runs a side, a regression must also pass a one-sided
Mann–Whitney U test (exact, by enumerating every split of the pooled runs) at ``p ≤`` :data:`ALPHA`,
so a change inside the runs' own spread never fails a build. With fewer runs there is no spread to
judge noise by, and the rules alone decide: the result says so. A time (p95, p99, loop lag) that
moved by less than :data:`MIN_MS` never counts, whatever the percentage.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loadlab.analysis.compare import run_metrics
from loadlab.analysis.culprits import culprits_of
from loadlab.gates import loop_busy, loop_lag_p99
from loadlab.results import aggregated_row, endpoint_rows

ALPHA = 0.05
MIN_RUNS_FOR_TEST = 3  # with 3 a side the smallest one-sided p is 1/20 = 0.05; with 2 it is 1/6
EXACT_LIMIT = 200_000  # splits enumerated exactly; beyond, the normal approximation
MIN_MS = 2.0  # Locust's percentiles are whole milliseconds: a smaller move of a time is no move
PRESENT_SHARE = 0.02  # a function holding the loop less than this is noise, not a blocker
CHANGED_SHARE = 0.05  # a blocker grew or shrank when its share moved by this much (5 pp)


class RuleError(ValueError):
    """A ``--fail-on`` rule that cannot be read; the message says what to write instead."""


def _p95(run: Mapping[str, Any]) -> float | None:
    return run_metrics(dict(run))["p95_ms"]


def _p99(run: Mapping[str, Any]) -> float | None:
    p99s = [p for s in endpoint_rows(dict(run)) if (p := s["p99_ms"]) is not None]
    return max(p99s) if p99s else None


def _rps(run: Mapping[str, Any]) -> float | None:
    total = aggregated_row(dict(run))
    return total["rps"] if total else run_metrics(dict(run))["rps"]


def _fail_ratio(run: Mapping[str, Any]) -> float | None:
    total = aggregated_row(dict(run))
    return total["failures"] / total["requests"] if total and total["requests"] else None


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    units: tuple[str, ...]  # accepted rule units besides %
    read: Callable[[Mapping[str, Any]], float | None]
    show: Callable[[float], str]


METRICS: Mapping[str, Metric] = {
    m.name: m
    for m in (
        Metric("rps", "throughput", (), _rps, lambda v: f"{v:.1f} req/s"),
        Metric("p95", "slowest endpoint p95", ("ms",), _p95, lambda v: f"{v:.1f} ms"),
        Metric("p99", "slowest endpoint p99", ("ms",), _p99, lambda v: f"{v:.1f} ms"),
        Metric("fail_ratio", "failure ratio", ("pp",), _fail_ratio, lambda v: f"{v:.2%}"),
        Metric("loop_lag", "event-loop lag p99", ("ms",), loop_lag_p99, lambda v: f"{v:.1f} ms"),
        Metric("loop_busy", "event-loop busy", ("pp",), lambda r: loop_busy(r)[0], lambda v: f"{v:.1%}"),
    )
}
_RULE = re.compile(r"^\s*(\w+)\s*:\s*([+-])\s*(\d+(?:\.\d+)?)\s*(%|pp|ms)\s*$")


@dataclass(frozen=True)
class Rule:
    metric: str
    worse: int  # +1: higher is worse, -1: lower is worse
    limit: float
    unit: str

    def __str__(self) -> str:
        return f"{self.metric}:{'+' if self.worse > 0 else '-'}{self.limit:g}{self.unit}"

    def change(self, base: float, now: float) -> float:
        """How far ``now`` moved from ``base`` in this rule's unit (signed)."""
        if self.unit == "%":
            if base == 0:
                return 0.0 if now == 0 else math.copysign(math.inf, now)
            return 100.0 * (now / base - 1.0)
        if self.unit == "pp":
            return 100.0 * (now - base)
        return now - base


def parse_rules(spec: str) -> list[Rule]:
    """``"rps:-10%,p95:+20%,loop_busy:+10pp"`` into rules; :class:`RuleError` names a bad one."""
    rules = []
    for part in spec.split(","):
        if not part.strip():
            continue
        m = _RULE.match(part)
        if not m:
            raise RuleError(f"--fail-on: {part.strip()!r} must look like METRIC:+N% (e.g. p95:+20%, rps:-10%)")
        name, sign, limit, unit = m.groups()
        if name not in METRICS:
            raise RuleError(f"--fail-on: unknown metric {name!r}; one of {', '.join(METRICS)}")
        if unit != "%" and unit not in METRICS[name].units:
            allowed = " or ".join(("%", *METRICS[name].units))
            raise RuleError(f"--fail-on: {part.strip()!r}: {name} takes {allowed}, not {unit}")
        rules.append(Rule(name, 1 if sign == "+" else -1, float(limit), unit))
    if not rules:
        raise RuleError("--fail-on is empty; e.g. --fail-on 'rps:-10%,p95:+20%,loop_busy:+10pp'")
    return rules


def mann_whitney_p(base: Sequence[float], now: Sequence[float], worse: int) -> float:
    """One-sided p-value that ``now`` tends to be worse (larger if ``worse`` > 0) than ``base``.

    U counts the pairs (b, n) where n is worse than b (ties count a half). Exact: the share of all
    ways of splitting the pooled values into groups of these sizes whose U is at least as large;
    beyond :data:`EXACT_LIMIT` splits, the normal approximation with a continuity correction.
    """
    b = [worse * x for x in base]
    n = [worse * x for x in now]

    def u(xs: Sequence[float], ys: Sequence[float]) -> float:
        return sum(1.0 if y > x else 0.5 if y == x else 0.0 for x in xs for y in ys)

    observed = u(b, n)
    pooled = b + n
    if math.comb(len(pooled), len(n)) <= EXACT_LIMIT:
        hits = total = 0
        for idx in itertools.combinations(range(len(pooled)), len(n)):
            chosen = set(idx)
            ys = [pooled[i] for i in idx]
            xs = [pooled[i] for i in range(len(pooled)) if i not in chosen]
            total += 1
            hits += u(xs, ys) >= observed - 1e-9
        return hits / total
    m1, m2 = len(b), len(n)
    mean, sd = m1 * m2 / 2, math.sqrt(m1 * m2 * (m1 + m2 + 1) / 12)
    z = (observed - mean - 0.5) / sd
    return 0.5 * math.erfc(z / math.sqrt(2))


def _blockers(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """Each function that held the loop, with its median share over ``runs`` (0 in a run that did
    not show it): py-spy's share where it ran, else the loop sampler's."""
    shares: dict[tuple[str, str, int], list[float]] = {}
    info: dict[tuple[str, str, int], dict[str, Any]] = {}
    for i, run in enumerate(runs):
        culprits = culprits_of(run)
        source = "py-spy" if any(c.source == "py-spy" for c in culprits) else "loop sampler"
        for c in culprits:
            if c.source != source or c.share is None or not c.file:
                continue
            key = (c.function, c.file, int(c.line or 0))
            values = shares.setdefault(key, [0.0] * len(runs))
            values[i] += c.share
            info.setdefault(key, {"function": c.function, "where": c.where, "route": c.route, "kind": c.kind})
    return {k: {**info[k], "share": statistics.median(v)} for k, v in shares.items()}


def blocker_changes(base: Sequence[Mapping[str, Any]], now: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Functions that held the loop and appeared, grew, shrank or vanished from BASELINE to
    CURRENT (unchanged ones are left out), the largest move first."""
    before, after = _blockers(base), _blockers(now)
    out = []
    for key in set(before) | set(after):
        b = before.get(key, {}).get("share", 0.0)
        a = after.get(key, {}).get("share", 0.0)
        if b < PRESENT_SHARE and a >= PRESENT_SHARE:
            status = "appeared"
        elif b >= PRESENT_SHARE and a < PRESENT_SHARE:
            status = "vanished"
        elif a - b >= CHANGED_SHARE:
            status = "grew"
        elif b - a >= CHANGED_SHARE:
            status = "shrank"
        else:
            continue
        out.append({**(after.get(key) or before[key]), "baseline_share": b, "current_share": a, "status": status})
    return sorted(out, key=lambda x: -abs(x["current_share"] - x["baseline_share"]))


def _values(runs: Sequence[Mapping[str, Any]], metric: Metric) -> list[float]:
    return [v for r in runs if (v := metric.read(r)) is not None]


def judge(rules: Sequence[Rule], base: Sequence[Mapping[str, Any]], now: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Each rule against the two sides' runs; ``regressed`` is True if any rule found a regression."""
    tested = min(len(base), len(now)) >= MIN_RUNS_FOR_TEST
    if tested:
        method = (
            f"medians of {len(base)} baseline and {len(now)} current runs against the rules, and a one-sided "
            f"Mann–Whitney U test on the per-run figures at p ≤ {ALPHA:g}: a change within the noise does not fail"
        )
    else:
        method = (
            f"thresholds only: {len(base)} baseline and {len(now)} current run(s) give no spread to judge the noise "
            f"by (the test needs {MIN_RUNS_FOR_TEST} runs a side: --repeats {MIN_RUNS_FOR_TEST} or more)"
        )
    rows = []
    for rule in rules:
        metric = METRICS[rule.metric]
        bv, nv = _values(base, metric), _values(now, metric)
        row: dict[str, Any] = {"rule": str(rule), "metric": rule.metric, "label": metric.label, "regression": False}
        row.update(baseline=bv, current=nv, baseline_median=None, current_median=None, change=None, p_value=None)
        if not bv or not nv:
            row["note"] = f"{metric.label} was not measured on {'both sides' if not bv and not nv else 'one side'}"
            rows.append(row)
            continue
        bm, nm = statistics.median(bv), statistics.median(nv)
        change = rule.change(bm, nm)
        exceeds = rule.worse * change > rule.limit
        if "ms" in metric.units and abs(nm - bm) < MIN_MS:
            exceeds = False  # 4 → 5 ms is +25 %, and one step of Locust's rounding
        row.update(baseline_median=bm, current_median=nm, change=change, exceeds=exceeds)
        if tested and len(bv) >= MIN_RUNS_FOR_TEST and len(nv) >= MIN_RUNS_FOR_TEST:
            row["p_value"] = round(mann_whitney_p(bv, nv, rule.worse), 4)
            row["regression"] = exceeds and row["p_value"] <= ALPHA
        else:
            row["regression"] = exceeds
        row["text"] = _row_text(rule, metric, row)
        rows.append(row)
    return {
        "method": method,
        "tested": tested,
        "rules": rows,
        "regressed": any(r["regression"] for r in rows),
        "blockers": blocker_changes(base, now),
    }


def _row_text(rule: Rule, metric: Metric, row: Mapping[str, Any]) -> str:
    change = row["change"]
    moved = f"{change:+.1f}{rule.unit}" if math.isfinite(change) else "from zero"
    p = f", p = {row['p_value']:.3g}" if row.get("p_value") is not None else ""
    verdict = "REGRESSION" if row["regression"] else ("within the noise" if row.get("exceeds") else "ok")
    return (
        f"{metric.label}: {metric.show(row['baseline_median'])} → {metric.show(row['current_median'])} "
        f"({moved}; rule {rule}{p}): {verdict}"
    )


def blocker_text(b: Mapping[str, Any]) -> str:
    route = f" (route {b['route']})" if b.get("route") else ""
    return (
        f"{b['status']}: {b['function']} in {b['where']}{route}, "
        f"{b['baseline_share']:.0%} → {b['current_share']:.0%} of the loop, {b['kind']}"
    )
