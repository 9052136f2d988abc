"""Compare runs: each variant against the first, as ratios, with the noise taken into account."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

from loadlab.analysis.theory import is_canary

# With one run per side there is no spread to judge noise by; differences smaller than this
# (as a ratio) are called not significant, from run-to-run spread seen on this kind of machine.
SINGLE_RUN_NOISE = 0.10


@dataclass(frozen=True)
class Spread:
    """Median and range of a few repeats."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Self:
        xs = sorted(values)
        if not xs:
            raise ValueError("a spread needs at least one value")
        return cls(statistics.median(xs), xs[0], xs[-1], len(xs))


def run_metrics(run: dict[str, Any]) -> dict[str, float | None]:
    """The four figures a comparison is made of."""
    rows = [s for s in run.get("stats", []) if s["name"] != "Aggregated" and not is_canary(s["name"])]
    canary = next((s for s in run.get("stats", []) if is_canary(s["name"])), None)
    p95s = [s["p95_ms"] for s in rows if s.get("p95_ms") is not None]
    loop = (run.get("analysis") or {}).get("loop", {})
    return {
        "rps": sum(s["rps"] for s in rows) if rows else None,
        "p95_ms": max(p95s) if p95s else None,
        "canary_p95_ms": canary.get("p95_ms") if canary else None,
        "loop_busy": loop.get("busy_share"),
    }


def _spread(values: list[float | None]) -> Spread | None:
    present = [v for v in values if v is not None]
    return Spread.of(present) if present else None


def _significant(a: Spread, b: Spread) -> bool:
    if a.n >= 2 and b.n >= 2:
        return b.low > a.high or b.high < a.low  # the ranges do not overlap
    base = a.median or 1e-9
    return abs(b.median / base - 1) > SINGLE_RUN_NOISE


def compare(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Group runs by name (repeats of one variant), summarise each, and set each against the first."""
    groups: dict[str, list[dict[str, float | None]]] = {}
    for name, run in runs:
        groups.setdefault(name, []).append(run_metrics(run))
    keys = ("rps", "p95_ms", "canary_p95_ms", "loop_busy")
    summary: dict[str, dict[str, Spread | None]] = {
        name: {k: _spread([m[k] for m in ms]) for k in keys} for name, ms in groups.items()
    }
    names = list(summary)
    base_name = names[0] if names else ""
    base = summary.get(base_name, {})
    rows = []
    for name in names:
        s = summary[name]
        row: dict[str, Any] = {"name": name, "runs": len(groups[name])}
        for k in keys:
            spread = s[k]
            row[k] = None if spread is None else {"median": spread.median, "low": spread.low, "high": spread.high}
            b = base.get(k)
            if spread is not None and b is not None and b.median:
                row[f"{k}_ratio"] = round(spread.median / b.median, 3)
                row[f"{k}_significant"] = _significant(b, spread)
        row["sentence"] = _sentence(name, base_name, s, base)
        rows.append(row)
    return {"baseline": base_name, "rows": rows}


def _sentence(name: str, base_name: str, s: dict[str, Spread | None], base: dict[str, Spread | None]) -> str:
    rps, brps = s["rps"], base.get("rps")
    if name == base_name or rps is None or brps is None or not brps.median:
        parts = [f"{name}: the baseline"]
        if rps is not None:
            parts.append(f"{rps.median:.0f} req/s" + (f" ({rps.low:.0f}–{rps.high:.0f})" if rps.n > 1 else ""))
    else:
        ratio = rps.median / brps.median
        if not _significant(brps, rps):
            parts = [f"{name}: throughput not significantly different from {base_name} ({ratio:.2f}×)"]
        else:
            parts = [f"{name}: {ratio:.2g}× the throughput of {base_name}"]
    busy, bbusy = s["loop_busy"], base.get("loop_busy")
    if busy is not None and bbusy is not None and name != base_name:
        parts.append(f"loop busy {bbusy.median:.0%} → {busy.median:.0%}")
    elif busy is not None:
        parts.append(f"loop busy {busy.median:.0%}")
    canary, bcanary = s["canary_p95_ms"], base.get("canary_p95_ms")
    if canary is not None and bcanary is not None and name != base_name:
        parts.append(f"canary p95 {bcanary.median:.0f} → {canary.median:.0f} ms")
    elif canary is not None:
        parts.append(f"canary p95 {canary.median:.0f} ms")
    return ", ".join(parts) + "."
