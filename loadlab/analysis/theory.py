"""What throughput each endpoint should have reached, by Little's law, next to what it did.

Little's law: throughput = requests in service at once / time each one takes. The execution model
decides how many can be in service at once:

===================  ===========================================  ==============================
model                in service at once (per server worker)       ceiling (req/s, all workers)
===================  ===========================================  ==============================
loop-blocking        1 — the loop serves one request at a time    workers / S
threadpool           min(users, thread tokens)                    min(users, tokens) × workers / S
loop executor        min(users, min(32, cores + 4))               min(users, that) × workers / S
asgiref one thread   1 — asgiref's shared thread (thread-         workers / S
                     sensitive, outside Django's handler)
asgiref per request  users (Django: a thread per request)         users / S
async                users (the loop interleaves them all)        users / S
cpu (GIL)            1 — one thread computes at a time            workers / S
process pool         min(pool processes, cores)                   min(pool, cores) / S
===================  ===========================================  ==============================

and never more than ``users / S`` in a closed model (each user waits for its answer). ``S``, the
service time, is measured on the idle server after the load (a few sequential requests), or else
taken as the fastest response Locust saw.
The model an endpoint *followed* is inferred from where its samples ran in the profile: the loop,
or the pool whose threads ran its sync code (``analysis.threadpool.by_function[].pool``: AnyIO's
threadpool for Starlette, FastAPI and ``anyio.to_thread``; the loop's default executor for Quart's
``run_sync``, Falcon's ``sync_to_async`` and Litestar's ``sync_to_thread`` on asyncio; asgiref's
threads for Django).
"""

from __future__ import annotations

import os
from typing import Any

from loadlab.analysis.frameworks import (
    ANYIO_POOL,
    ASGIREF_PER_REQUEST,
    ASGIREF_SHARED,
    LOOP_EXECUTOR_POOL,
    default_executor_size,
)
from loadlab.results import StatsRow, canary_row, endpoint_rows, is_canary

__all__ = ["canary_damage", "ceiling", "infer_model", "is_canary", "service_time_s", "theory_table", "thread_tokens"]

# Beyond this share of one core, the server process itself was the limit.
SERVER_CPU_LIMIT = 90.0
GENERATOR_CPU_LIMIT = 90.0
# The model of a route whose sync code ran in each pool.
POOL_MODELS = {
    ANYIO_POOL: "threadpool",
    LOOP_EXECUTOR_POOL: "loop executor",
    ASGIREF_SHARED: "asgiref one thread",
    ASGIREF_PER_REQUEST: "asgiref per request",
}
# A route whose handler held the loop for this share of loop samples followed the blocking model.
BLOCKING_SHARE = 0.05


def infer_model(route: str, analysis: dict[str, Any] | None, only_endpoint: bool = False) -> str:
    """Which execution model the route followed, from where its samples ran. ``only_endpoint``:
    the run loaded this route alone, so busy workers with no route on their stack (a function
    passed to ``run_in_threadpool``) are its work too."""
    if not analysis:
        return "unknown"
    for b in analysis["loop"]["blockers"]:
        if b.get("route") == route and b["share"] >= BLOCKING_SHARE:
            return "cpu (GIL)" if b["kind"] == "cpu" else "loop-blocking"
    for f in analysis["threadpool"]["by_function"]:
        if (f.get("route") == route or (only_endpoint and f.get("route") is None)) and f["average_busy_workers"] > 0.05:
            return POOL_MODELS.get(str(f.get("pool") or ANYIO_POOL), "threadpool")
    pool_children = [t for t in analysis.get("threads", []) if t["role"] == "process-pool child"]
    if "process" in route and pool_children:
        return "process pool"
    return "async"


def ceiling(model: str, service_s: float, users: int, tokens: int, workers: int, pool: int) -> float | None:
    """The model's throughput ceiling in req/s (Little's law), capped by the closed-model bound."""
    if service_s <= 0:
        return None
    cores = os.cpu_count() or 1
    closed = users / service_s
    by_model = {
        "loop-blocking": workers / service_s,
        "cpu (GIL)": workers / service_s,
        "threadpool": min(users, tokens) * workers / service_s,
        "loop executor": min(users, default_executor_size(cores)) * workers / service_s,
        "asgiref one thread": workers / service_s,
        "asgiref per request": users / service_s,
        "async": users / service_s,
        "process pool": min(pool, cores) / service_s,
    }.get(model)
    return None if by_model is None else min(by_model, closed)


def thread_tokens(run: dict[str, Any]) -> int:
    """The threadpool's size during the run, as the app reported it (AnyIO's default: 40)."""
    totals = [p["threadpool"]["total"] for p in run.get("timeseries", []) if isinstance(p.get("threadpool"), dict)]
    return int(totals[-1]) if totals else 40


def _max_point(timeseries: list[dict[str, Any]], key: str) -> float | None:
    values = [p[key] for p in timeseries if isinstance(p.get(key), int | float)]
    return max(values) if values else None


def service_time_s(run: dict[str, Any], row: StatsRow) -> float:
    """An endpoint's service time: probed on the idle server after the load if it could be,
    else the fastest response Locust saw (which, under load, may include a little queueing)."""
    probed = (run.get("service_probe") or {}).get(row["name"])
    return float(probed or row.get("min_ms") or 0) / 1000


def theory_table(run: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per endpoint (the canary and Locust's Aggregated row aside): model, service time,
    predicted ceiling, measured, measured/predicted, and what limited it if not the model."""
    cfg = run.get("config", {})
    stats = endpoint_rows(run)
    analysis = run.get("analysis")
    series = run.get("timeseries", [])
    tokens = thread_tokens(run)
    workers = int(cfg.get("workers", 1))
    pool = int(run.get("env", {}).get("LOADLAB_PROCESS_WORKERS", os.cpu_count() or 1))
    # The canary is one of the users; the rest share the endpoints evenly.
    users = max(1, (int(cfg.get("users", 1)) - 1) // max(1, len(stats)))
    server_cpu = _max_point(series, "server_cpu_percent")
    generator_cpu = _generator_cpu(run)
    rows = []
    for s in stats:
        service_s = service_time_s(run, s)
        model = infer_model(s["name"], analysis, only_endpoint=len(stats) == 1)
        predicted = ceiling(model, service_s, users, tokens, workers, pool) if service_s else None
        ratio = s["rps"] / predicted if predicted else None
        limit = None
        if generator_cpu is not None and generator_cpu >= GENERATOR_CPU_LIMIT:
            limit = f"load generator CPU {generator_cpu:.0f}%"
        elif ratio is not None and ratio < 0.8 and server_cpu is not None and server_cpu >= SERVER_CPU_LIMIT:
            limit = f"server CPU {server_cpu:.0f}%"
        rows.append(
            {
                "endpoint": s["name"],
                "model": model,
                "service_ms": round(service_s * 1000, 2) if service_s else None,
                "users": users,
                "predicted_rps": round(predicted, 1) if predicted else None,
                "measured_rps": s["rps"],
                "ratio": round(ratio, 3) if ratio is not None else None,
                "limited_by": limit,
            }
        )
    return rows


def _generator_cpu(run: dict[str, Any]) -> float | None:
    for check in (run.get("thresholds") or {}).get("checks", []):
        if check.get("name") == "load generator CPU" and isinstance(check.get("measured"), int | float):
            return float(check["measured"])
    return _max_point(run.get("timeseries", []), "locust_cpu_percent")


def canary_damage(run: dict[str, Any]) -> dict[str, Any] | None:
    """The canary's latency under load against its idle baseline, as a factor."""
    idle = run.get("canary_idle")
    row = canary_row(run)
    if not idle or not row or not row.get("p50_ms"):
        return None
    base = max(idle["p50_ms"], 0.1)
    return {
        "endpoint": row["name"],
        "idle_p50_ms": idle["p50_ms"],
        "load_p50_ms": row["p50_ms"],
        "load_p99_ms": row["p99_ms"],
        "p50_factor": round(row["p50_ms"] / base, 1),
        "p99_factor": round((row["p99_ms"] or 0) / base, 1),
    }
