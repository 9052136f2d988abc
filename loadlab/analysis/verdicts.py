"""Plain sentences a user can act on, each with its number, from a run's stored data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadlab.analysis.theory import canary_damage, ceiling, service_time_s, theory_table, thread_tokens
from loadlab.results import load_users

# Below this share of loop samples a function is noise, not a blocker worth a sentence.
BLOCKER_SHARE = 0.05
# The threadpool counts as saturated when all its tokens were borrowed in this share of seconds.
SATURATED_SHARE = 0.2
# A worker function waiting on a lock or queue this much is queueing for a resource pool.
POOL_WAIT_SHARE = 0.5


@dataclass(frozen=True)
class Verdict:
    level: str  # "problem", "warning" or "ok"
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "text": self.text}


def _where(b: dict[str, Any]) -> str:
    place = f"{b['file'].rsplit('/', 2)[-2]}/{b['file'].rsplit('/', 1)[-1]}:{b['line']}" if b.get("file") else ""
    route = f", route {b['route']}" if b.get("route") else ""
    return f" ({place}{route})" if place or route else ""


def blocker_verdicts(run: dict[str, Any]) -> list[Verdict]:
    analysis = run.get("analysis")
    if not analysis:
        return [
            Verdict(
                "warning",
                "No profile was recorded (--no-profile or py-spy failed), so nothing names a blocker.",
            )
        ]
    loop = analysis["loop"]
    busy = loop.get("busy_share")
    blockers = [b for b in loop["blockers"] if b["share"] >= BLOCKER_SHARE and b.get("file")]
    if not blockers:
        share = f"{busy:.0%}" if busy is not None else "an unknown share"
        return [
            Verdict(
                "ok",
                f"No function of yours held the event loop for {BLOCKER_SHARE:.0%} or more of the time "
                f"(the loop was busy {share} of its samples in all).",
            )
        ]
    out = []
    users = load_users(run)
    stats = {s["name"]: s for s in run.get("stats", [])}
    for b in blockers:
        head = f"`{b['function']}`{_where(b)} blocked the event loop {b['share']:.0%} of the time"
        row = stats.get(b.get("route") or "")
        service_s = service_time_s(run, row) if row else 0
        if b["kind"] == "wait":
            gain = ""
            if service_s and row:
                after = ceiling("threadpool", service_s, users, thread_tokens(run), 1, 1) or 0
                gain = f" Offloaded, {users} users could reach ~{after:.0f} req/s instead of {row['rps']:.0f}."
            out.append(
                Verdict(
                    "problem",
                    f"{head}, waiting (sleep, I/O or a lock), not computing: make it `def`, "
                    f"wrap the call in `await run_in_threadpool(...)`, or use an async library.{gain}",
                )
            )
        elif b["kind"] == "cpu":
            out.append(
                Verdict(
                    "problem",
                    f"{head}, computing: move the work to a process pool "
                    "(`loop.run_in_executor(ProcessPoolExecutor(), ...)`) or more server workers; "
                    "a thread will not help, the GIL lets one thread compute at a time.",
                )
            )
        else:
            out.append(
                Verdict(
                    "problem",
                    f"{head}; whether it waited or computed is unknown "
                    "(record with --native, or let the stall watchdog see it).",
                )
            )
    return out


def threadpool_verdicts(run: dict[str, Any]) -> list[Verdict]:
    series = [p["threadpool"] for p in run.get("timeseries", []) if isinstance(p.get("threadpool"), dict)]
    out = []
    if series:
        full = [p for p in series if p["total"] and p["borrowed"] >= p["total"]]
        if len(full) / len(series) >= SATURATED_SHARE:
            waiting = max(p["waiting"] for p in series)
            out.append(
                Verdict(
                    "warning",
                    f"The threadpool was saturated: all {series[-1]['total']} worker threads busy in "
                    f"{len(full)} of {len(series)} seconds, up to {waiting} tasks queued for a thread. "
                    "Raise the limiter's total_tokens (LOADLAB_THREAD_TOKENS here) or go async.",
                )
            )
    analysis = run.get("analysis") or {}
    for f in analysis.get("threadpool", {}).get("by_function", []):
        if f["lock_wait_share"] >= POOL_WAIT_SHARE and f["average_busy_workers"] >= 1:
            out.append(
                Verdict(
                    "warning",
                    f"Worker threads in `{f['function']}` spent {f['lock_wait_share']:.0%} of their busy "
                    f"time waiting on a lock or queue (~{f['average_busy_workers']:.1f} threads on average): "
                    "a resource pool smaller than the threadpool is the bottleneck, not the threads.",
                )
            )
    return out


def canary_verdicts(run: dict[str, Any]) -> list[Verdict]:
    damage = canary_damage(run)
    if damage is None:
        return []
    factor = damage["p50_factor"]
    # A factor alone over-reads a sub-millisecond baseline: 2 ms under load is 5× but harmless.
    slow = damage["load_p50_ms"]
    level = "problem" if factor >= 10 and slow >= 50 else "warning" if factor >= 3 and slow >= 10 else "ok"
    times = f"{factor:,.0f}" if factor >= 10 else f"{factor:.1f}"
    return [
        Verdict(
            level,
            f"Collateral damage: the canary {damage['endpoint']} answered in {damage['load_p50_ms']:.0f} ms "
            f"(p50) under load against {damage['idle_p50_ms']:.1f} ms idle — {times}× slower.",
        )
    ]


def theory_verdicts(run: dict[str, Any]) -> list[Verdict]:
    out = []
    for row in theory_table(run):
        if row["limited_by"]:
            out.append(
                Verdict(
                    "warning",
                    f"{row['endpoint']}: {row['measured_rps']:.0f} req/s was limited by "
                    f"{row['limited_by']}, not by its execution model; the figures understate it.",
                )
            )
        elif row["ratio"] is not None:
            out.append(
                Verdict(
                    "ok" if row["ratio"] >= 0.8 else "warning",
                    f"{row['endpoint']} followed the {row['model']} model: {row['measured_rps']:.0f} req/s "
                    f"measured, {row['predicted_rps']:.0f} predicted by Little's law ({row['ratio']:.0%}).",
                )
            )
    return out


def health_verdicts(run: dict[str, Any]) -> list[Verdict]:
    """Why the run failed or is doubtful (see :mod:`loadlab.analysis.health`), before any figure."""
    health = run.get("health") or {}
    found = [Verdict("problem", p["text"]) for p in health.get("problems", [])]
    reason = str(run.get("reason") or "").strip()
    if run.get("status") in ("failed", "incomplete") and reason and all(v.text != reason for v in found):
        # A run that stopped early (the server died, an interrupt) says so before any figure.
        found.insert(0, Verdict("problem", f"The run is {run['status']}: {reason.splitlines()[0]}"))
    return found


def verdicts(run: dict[str, Any]) -> list[dict[str, str]]:
    """Every verdict of a run: why it failed or is doubtful first, then the problems first.

    A failed run measured an error (or nothing): its theory and its all-clear verdicts would read
    as findings about the app, so only the problems it found are kept.
    """
    found = blocker_verdicts(run) + threadpool_verdicts(run) + canary_verdicts(run)
    if (run.get("health") or {}).get("verdict") != "failed" and run.get("status") != "failed":
        found += theory_verdicts(run)
    else:
        found = [v for v in found if v.level == "problem"]
    order = {"problem": 0, "warning": 1, "ok": 2}
    ranked = health_verdicts(run) + sorted(found, key=lambda v: order[v.level])
    return [v.to_dict() for v in ranked]
