"""Compare runs: each variant against the first, as ratios, with the noise taken into account."""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Self

from loadlab.results import canary_row, endpoint_rows

# With one run per side there is no spread to judge noise by; differences smaller than this
# (as a ratio) are called not significant, from run-to-run spread seen on this kind of machine.
SINGLE_RUN_NOISE = 0.10


def times(ratio: float) -> str:
    """A ratio as people say it: 0.58, 1.5, 17, 183 (never 1.8e+02)."""
    return f"{ratio:.2g}" if ratio < 10 else f"{ratio:,.0f}"


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
    rows = endpoint_rows(run)
    canary = canary_row(run)
    p95s = [p for s in rows if (p := s["p95_ms"]) is not None]
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


Identity = tuple[str, str, tuple[str, ...]]


def identity(run: dict[str, Any]) -> Identity:
    """What makes two runs repeats of one thing: the app, the locustfile (its path as stored) and
    the variant (else the tags) that picked the locustfile's tasks. A record without a config (an
    old or hand-made one) has an empty identity, so it is grouped by its name alone."""
    config = run.get("config") or {}
    locustfile = str(config.get("locustfile") or "")
    variant = run.get("variant")
    tasks = (str(variant),) if variant else tuple(str(t) for t in config.get("tags") or ())
    return str(config.get("app") or ""), os.path.normpath(locustfile) if locustfile else "", tasks


def _qualifiers(ids: list[Identity]) -> tuple[list[str], list[str]]:
    """For runs sharing a display name but not an identity: what to add to each name (only the
    parts that differ), and what those parts are called."""
    apps, files, tasks = {i[0] for i in ids}, sorted({i[1] for i in ids}), {i[2] for i in ids}
    stems = {f: os.path.splitext(os.path.basename(f))[0] or f for f in files}
    short_files = len(set(stems.values())) == len(files)  # db_routes, else the whole path
    parts: list[list[str]] = [[] for _ in ids]
    what = []
    if len(apps) > 1:
        what.append("app")
        for p, i in zip(parts, ids, strict=True):
            p.append(i[0] or "no app")
    if len(files) > 1:
        what.append("locustfile")
        for p, i in zip(parts, ids, strict=True):
            p.append((stems[i[1]] if short_files else i[1]) or "no locustfile")
    if len(tasks) > 1:
        what.append("tags")
        for p, i in zip(parts, ids, strict=True):
            p.append("-T " + " ".join(i[2]) if i[2] else "no tags")
    return [", ".join(p) for p in parts], what


def display_names(runs: list[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """The name each run is shown and grouped under, and notes on any name that had to change.

    Runs are repeats of one another only when they share a name *and* an identity (see
    :func:`identity`). Runs that share a name but not an identity (the ``blocking`` variant of a
    db suite and of a files suite; two apps' folders both called ``run``) get the name followed by
    what differs: ``blocking (db_routes)``, ``run (myapp:app)``. Names without such a clash stay
    as they are, so a suite's variants and repeats of one suite read as before.
    """
    ids_of: dict[str, list[Identity]] = {}
    for name, run in runs:
        ids = ids_of.setdefault(name, [])
        if identity(run) not in ids:
            ids.append(identity(run))
    label: dict[tuple[str, Identity], str] = {}
    differs: dict[str, list[str]] = {}
    for name, ids in ids_of.items():
        if len(ids) == 1:
            label[(name, ids[0])] = name
            continue
        extra, differs[name] = _qualifiers(ids)
        for i, q in zip(ids, extra, strict=True):
            label[(name, i)] = f"{name} ({q})"
    # A made-up name could still equal another run's own name: number it rather than merge them.
    taken: dict[str, tuple[str, Identity]] = {}
    for (name, i), text in list(label.items()):
        unique, n = text, 1
        while unique in taken and taken[unique] != (name, i):
            n += 1
            unique = f"{text} #{n}"
        taken[unique] = (name, i)
        label[(name, i)] = unique
    notes = [
        f"runs named {name} come from {len(ids_of[name])} setups (the {' and the '.join(what)} "
        f"{'differ' if len(what) > 1 else 'differs'}), "
        f"so they are not repeats of one another: shown as {', '.join(label[(name, i)] for i in ids_of[name])}"
        for name, what in differs.items()
    ]
    return [label[(name, identity(run))] for name, run in runs], notes


def compare(runs: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Group repeats of one run (same name, same :func:`identity`), summarise each group, and set
    each against the first. A name shared by runs of different setups is made distinct."""
    names_shown, notes = display_names(runs)
    groups: dict[str, list[dict[str, float | None]]] = {}
    setups: dict[str, Identity] = {}
    for shown, (_, run) in zip(names_shown, runs, strict=True):
        groups.setdefault(shown, []).append(run_metrics(run))
        setups.setdefault(shown, identity(run))
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
        app, locustfile, tasks = setups[name]
        row: dict[str, Any] = {
            "name": name,
            "runs": len(groups[name]),
            "setup": {"app": app or None, "locustfile": locustfile or None, "tags": list(tasks)},
        }
        for k in keys:
            spread = s[k]
            row[k] = None if spread is None else {"median": spread.median, "low": spread.low, "high": spread.high}
            b = base.get(k)
            if spread is not None and b is not None and b.median:
                row[f"{k}_ratio"] = round(spread.median / b.median, 3)
                row[f"{k}_significant"] = _significant(b, spread)
        row["sentence"] = _sentence(name, base_name, s, base)
        rows.append(row)
    return {"baseline": base_name, "rows": rows, "notes": notes}


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
            parts = [f"{name}: {times(ratio)}× the throughput of {base_name}"]
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
