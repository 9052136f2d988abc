"""Plain sentences a user can act on, each with its number, from a run's stored data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadlab.analysis.frameworks import ASGIREF_SHARED
from loadlab.analysis.mix import FIT, LOOP, measure_demands, mix_model
from loadlab.analysis.theory import canary_damage, theory_table
from loadlab.results import endpoint_rows

# Below this share of loop samples a function is noise, not a blocker worth a sentence.
BLOCKER_SHARE = 0.05
# The threadpool counts as saturated when all its tokens were borrowed in this share of seconds.
SATURATED_SHARE = 0.2
# A worker function waiting on a lock or queue this much is queueing for a resource pool.
POOL_WAIT_SHARE = 0.5
# Waiting to enter one lock this much of their busy time: worker threads are serialised by it.
LOCK_WAIT_SHARE = 0.3
# A station this busy in the model is the bottleneck; below it, the users are the limit.
SATURATED = 0.8
# The loop sampler found the loop waiting for a GIL held by computing threads this often.
GIL_STARVED_SHARE = 0.15
# A blocker named as what held the loop shows at least 1% once rounded.
HELD_MIN_SHARE = 0.005


@dataclass(frozen=True)
class Verdict:
    level: str  # "problem", "warning" or "ok"
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "text": self.text}


def _file_line(b: dict[str, Any]) -> str:
    return f"{b['file'].rsplit('/', 2)[-2]}/{b['file'].rsplit('/', 1)[-1]}:{b['line']}" if b.get("file") else ""


def _routes_text(routes: list[str]) -> str:
    return ", ".join(routes[:4]) + (f" and {len(routes) - 4} more" if len(routes) > 4 else "")


def _where(b: dict[str, Any]) -> str:
    """Where a blocker sits: ``(in the dependency `verify_token` of /orders; shop.py:65)``."""
    place, routes, handler = b.get("place"), b.get("routes") or [], b.get("handler")
    called = f"`{handler}`" if handler and handler != b["function"] else ""
    if place == "handler":
        where = f"in the handler {called + ' ' if called else ''}of {_routes_text(routes)}"
    elif place == "dependency":
        where = f"in the dependency {called + ' ' if called else ''}of {_routes_text(routes)}"
    elif place == "middleware":
        where = f"in the middleware{' ' + called if called else ''}, on every route"
    elif place == "background":
        where = f"in a background task{' queued by ' + _routes_text(routes) if routes else ''}"
    elif place == "startup":
        where = "during start-up"
    else:  # an older run (no place), or code outside the app's map
        where = f"route {b['route']}" if b.get("route") else ""
    parts = [p for p in (where, _file_line(b)) if p]
    return f" ({'; '.join(parts)})" if parts else ""


def _evidence(b: dict[str, Any]) -> str:
    kinds = b.get("kinds")
    if not kinds:
        return ""
    share = kinds.get(b["kind"], 0)
    return f" [{share:.0%} of its samples: {b.get('kind_from', 'the profile')}]"


# Each framework's own way to run a blocking call off the event loop: (the call to wrap it in,
# what to do with the whole handler). FastAPI's (and a raw ASGI app's) is the default.
OFF_LOOP: dict[str | None, tuple[str, str]] = {
    None: ("`await run_in_threadpool(...)`", "make it `def` (FastAPI runs it in the threadpool)"),
    "starlette": (
        "`await run_in_threadpool(...)` (`starlette.concurrency`)",
        "make the endpoint `def` (Starlette runs it in AnyIO's threadpool)",
    ),
    "django": (
        "`await sync_to_async(fn, thread_sensitive=False)(...)` (asgiref: the loop's default executor; "
        "`thread_sensitive=True`, the default, sends every call made outside Django's request handling "
        "to one shared thread)",
        "make the view `def` (Django runs it in a thread of its own per request)",
    ),
    "litestar": (
        "`await anyio.to_thread.run_sync(...)`",
        "make the handler `def` with `sync_to_thread=True` (`@get(..., sync_to_thread=True)`)",
    ),
    "quart": (
        "`await run_sync(fn)()` (`quart.utils.run_sync`) or `await app.ensure_async(fn)(...)`",
        "make the view `def` (Quart runs it with `run_sync` in the loop's default executor)",
    ),
    "falcon": (
        "`await falcon.util.sync_to_async(fn, ...)` or `await loop.run_in_executor(None, fn, ...)`",
        "",
    ),
}


def _advice(b: dict[str, Any], gain: str, framework: str | None = None) -> str:
    kind = b["kind"]
    wrap, handler = OFF_LOOP.get(framework if framework != "fastapi" else None, OFF_LOOP[None])
    if kind == "wait" and b.get("place") in ("middleware", "startup"):
        return (
            f"waiting (sleep, I/O or a lock), not computing: wrap the blocking call in {wrap} "
            f"or use an async library (a middleware cannot be `def`).{gain}"
        )
    if kind == "wait":
        if framework in (None, "fastapi"):
            return (
                "waiting (sleep, I/O or a lock), not computing: make it `def` (FastAPI runs it in the threadpool), "
                f"wrap the call in `await run_in_threadpool(...)`, or use an async library.{gain}"
            )
        first = f"{handler}, " if handler else ""
        return (
            f"waiting (sleep, I/O or a lock), not computing: {first}wrap the call in {wrap}, or use an async "
            f"library.{gain}"
        )
    if kind == "cpu" and b.get("gil_released"):
        return (
            "computing in C code that releases the GIL (as `hashlib`, `zlib`, `sqlite3` do): "
            f"{wrap} takes it off the loop, and threads do run it in parallel on "
            f"the cores, so the threadpool adds throughput too.{gain}"
        )
    if kind == "cpu":
        return (
            "computing with the GIL held (Python code, or C that keeps the GIL such as `json.dumps`): move "
            "the work to a process pool (`loop.run_in_executor(ProcessPoolExecutor(), ...)`) or more server "
            "workers; a thread would free the loop's latency but add no throughput, the GIL lets one thread "
            f"compute at a time.{gain}"
        )
    if kind == "gil":
        return (
            "waiting for the GIL, which worker threads held while they computed (see the threadpool): the "
            "loop is starved by CPU work in `def` routes or `run_in_threadpool`; move that work to a process "
            "pool."
        )
    return "whether it waited or computed is unknown (record with --native, or let the loop sampler see it)."


def advice_for(blocker: dict[str, Any], gain: str = "", framework: str | None = None) -> str:
    """What to do about a blocker of this ``kind`` (and ``place``), in the words of the app's
    ``framework`` (as ``analysis.framework`` names it): the sentence the report ends on."""
    return _advice(blocker, gain, framework)


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
    model = model_of(run)
    what_ifs = {w["function"]: w for w in (model or {}).get("what_ifs", [])}
    out = []
    for b in blockers:
        head = f"`{b['function']}`{_where(b)} held the event loop {b['share']:.0%} of the time{_evidence(b)}"
        # What moving it buys, from the model of the whole mix: the other blockers still hold the loop.
        w = what_ifs.get(b["function"])
        gain = f" {_what_if_text(w, model)}" if w and model else ""
        advice = _advice(b, gain, analysis.get("framework"))
        out.append(Verdict("problem", f"{head}: {advice}{_whatif(run, b)}"))
    return out


def model_of(run: dict[str, Any]) -> dict[str, Any] | None:
    """The queueing model of the run's whole mix (its stored ``demands``, else measured now)."""
    demands = run.get("demands") or measure_demands(run)
    return mix_model(demands) if demands else None


def _station_text(name: str | None) -> str:
    return "no station" if name is None else f"the {name}"


def _what_if_text(w: dict[str, Any], model: dict[str, Any]) -> str:
    then = (
        f"the bottleneck would still be {_station_text(w['bottleneck'])}"
        if w["bottleneck"] == model["bottleneck"]
        else f"the bottleneck would then be {_station_text(w['bottleneck'])} ({w['bottleneck_utilisation']:.0%} busy)"
    )
    if "process" in str(w["to"]):
        # A pool's own cost per call (pickling, the hand-over between processes) is not in a run
        # that has no pool: on the demo's /cpu/process it took 11-24% off the prediction.
        return (
            f"Moving it off the loop (to {w['to']}): the mix would reach at most ~{w['predicted_rps']:.0f} req/s "
            f"({model['measured_rps']:.0f} now; each call also pays the pool's pickling and hand-over, which "
            f"this run cannot see: 11-24% less on the demo's /cpu/process); {then}."
        )
    return (
        f"Moving it off the loop (to {w['to']}): the mix would reach ~{w['predicted_rps']:.0f} req/s "
        f"({model['measured_rps']:.0f} now); {then}."
    )


def _left_out(model: dict[str, Any]) -> str:
    """What the model thinks it left out, by the side it missed on."""
    if (model.get("ratio") or 1) < 1:
        return (
            "the server was slower than its measured demands say: CPU taken by other processes on this machine "
            "(the model counts only the server's and Locust's), py-spy's pauses, or a station the profile cannot "
            "see (a connection pool, a remote service's own capacity)"
        )
    return (
        "the server was faster than its measured demands say: work counted that is not in the requests' path "
        "(start-up, the probe after the load), or a blocker shared by routes split wrongly between them"
    )


def model_verdicts(run: dict[str, Any]) -> list[Verdict]:
    """The bottleneck of the whole mix first, with how well the model fits; then, for a mix,
    each route against the model (one that fits is no warning)."""
    model = model_of(run)
    if not model or not model.get("bottleneck"):
        return []
    name, busy = model["bottleneck"], model["utilisation"].get(model["bottleneck"], 0.0)
    held = ""
    if name == LOOP:
        top = sorted(
            (
                b
                for b in ((run.get("analysis") or {}).get("loop") or {}).get("blockers", [])
                if b.get("file") and b["share"] >= HELD_MIN_SHARE
            ),
            key=lambda b: -b["share"],
        )[:3]
        if top:
            held = ", held mostly by " + ", ".join(f"`{b['function']}` ({b['share']:.0%})" for b in top)
    routes = model["routes"]
    fits = model["ratio"] is not None and abs(model["ratio"] - 1) <= FIT
    knee = f" Past ~{model['knee_users']:.0f} users, more users only wait longer." if model.get("knee_users") else ""
    fit = (
        f"the model fits ({model['ratio']:.0%})."
        if fits
        else f"the model misses by {abs(1 - (model['ratio'] or 0)):.0%}; what it leaves out: {_left_out(model)}."
    )
    mix = (
        f"The model of the whole mix ({len(routes)} route{'s' if len(routes) != 1 else ''}, ~{model['users']:.0f} "
        f"users, {model['think_ms']:.0f} ms between requests) predicts {model['predicted_rps']:.0f} req/s; "
        f"{model['measured_rps']:.0f} were measured: {fit}"
    )
    if busy >= SATURATED:
        head = f"Bottleneck: {_station_text(name)} ({busy:.0%} busy in the model){held}. {mix}{knee}"
    else:
        head = (
            f"No station is saturated (the busiest, {_station_text(name)}, {busy:.0%}): the users are the limit, each "
            f"waiting for its answer; more of them would bring more throughput. {mix}"
        )
    level = "warning" if not fits else "problem" if busy >= SATURATED and name != "threadpool" else "ok"
    out = [Verdict(level, head)]
    if len(routes) >= 2:
        good: list[tuple[dict[str, Any], float | None]] = []
        bad: list[tuple[dict[str, Any], float | None]] = []
        for r in routes:
            ratio = r["measured_rps"] / r["predicted_rps"] if r["predicted_rps"] else None
            # A route with few requests has a count that varies by itself: ±2/√n (Poisson).
            tolerance = max(FIT, 2 / (r.get("requests") or 1) ** 0.5)
            (good if ratio is not None and abs(ratio - 1) <= tolerance else bad).append((r, ratio))
        if good:
            out.append(
                Verdict(
                    "ok",
                    "Fit the model: "
                    + "; ".join(
                        f"{r['route']} {r['measured_rps']:.0f} req/s ({r['predicted_rps']:.0f} predicted)"
                        for r, _ in good
                    )
                    + ".",
                )
            )
        for r, ratio in bad:
            out.append(
                Verdict(
                    "warning",
                    f"{r['route']}: {r['measured_rps']:.0f} req/s measured, {r['predicted_rps']:.0f} predicted by the "
                    f"model of the mix ({ratio:.0%})" + (": " + _left_out({"ratio": ratio}) + "." if ratio else "."),
                )
            )
    return out


def _whatif(run: dict[str, Any], blocker: dict[str, Any]) -> str:
    """The ``loadlab whatif`` command that measures this blocker moved off the loop, if its source
    is here to name the call."""
    from loadlab.whatif import blocker_command

    command = blocker_command(run, blocker)
    return f" What-if: `{command}`" if command else ""


def lock_ceilings(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Each lock that worker threads queued for, with the throughput it lets through at most: one
    request holds it at a time, for the time its samples past the lock say (Little's law with
    one server: ceiling = requests / time held)."""
    analysis = run.get("analysis") or {}
    rate = float((run.get("config") or {}).get("rate") or 100)
    stats = {s["name"]: s for s in run.get("stats", [])}
    out = []
    for f in analysis.get("threadpool", {}).get("by_function", []):
        lock, row = f.get("lock"), stats.get(f.get("route") or "")
        if not lock or f["lock_wait_share"] < LOCK_WAIT_SHARE or not row or not f.get("held_samples"):
            continue
        held_s = f["held_samples"] / rate
        out.append(
            {
                "function": f["function"],
                "route": f["route"],
                "lock": lock,
                "lock_wait_share": f["lock_wait_share"],
                "held_ms_per_request": round(held_s / max(1, row["requests"]) * 1000, 2),
                "ceiling_rps": round(row["requests"] / held_s, 1),
                "measured_rps": row["rps"],
            }
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
    starved = ((analysis.get("loop") or {}).get("gil_wait_share")) or 0.0
    computing = [
        f
        for f in analysis.get("threadpool", {}).get("by_function", [])
        if f["average_busy_workers"] >= 0.3 and f["lock_wait_share"] < POOL_WAIT_SHARE and f.get("route")
    ]
    if starved >= GIL_STARVED_SHARE and computing:
        f = computing[0]
        route = f" ({f['route']})" if f.get("route") else ""
        out.append(
            Verdict(
                "problem",
                f"The event loop waited for the GIL in {starved:.0%} of the loop sampler's looks, held by worker "
                f"threads computing in `{f['function']}`{route} (~{f['average_busy_workers']:.1f} threads busy): "
                "CPU work in `def` routes or `run_in_threadpool` starves every request on the loop. Move it "
                "to a process pool (`loop.run_in_executor(ProcessPoolExecutor(), ...)`).",
            )
        )
    out += shared_thread_verdicts(run)
    locks = {c["function"]: c for c in lock_ceilings(run)}
    for c in locks.values():
        site = f"{c['lock']['file'].rsplit('/', 1)[-1]}:{c['lock']['line']}"
        out.append(
            Verdict(
                "problem",
                f"Worker threads in `{c['function']}` ({c['route']}) waited {c['lock_wait_share']:.0%} of their busy "
                f"time to enter the lock at {site} (`{c['lock']['code']}`): one request holds it for "
                f"~{c['held_ms_per_request']:.0f} ms at a time, so {c['route']} cannot pass ~{c['ceiling_rps']:.0f} "
                f"req/s however many threads wait (it reached {c['measured_rps']:.0f}). Hold the lock for less, "
                "or give each request its own resource.",
            )
        )
    for f in analysis.get("threadpool", {}).get("by_function", []):
        if f["function"] in locks:
            continue
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


# asgiref's shared thread this busy (the share of the time it ran a call) queues the calls for it.
SHARED_THREAD_BUSY = 0.3


def shared_thread_verdicts(run: dict[str, Any]) -> list[Verdict]:
    """asgiref's one shared thread ran the app's ``sync_to_async`` calls: they wait in line for
    it, whatever the load. Its ceiling by the utilisation law: ``X / U`` calls a second."""
    analysis = run.get("analysis") or {}
    pool = next((p for p in (analysis.get("threadpool") or {}).get("pools", []) if p["pool"] == ASGIREF_SHARED), None)
    if pool is None or not pool["average_busy_workers"]:
        return []
    funcs = [f for f in analysis["threadpool"]["by_function"] if f.get("pool") == ASGIREF_SHARED]
    rows = endpoint_rows(run)
    routes = sorted({str(f["route"]) for f in funcs if f.get("route")}) or ([rows[0]["name"]] if len(rows) == 1 else [])
    x = sum(float(r["rps"]) for r in rows if not routes or r["name"] in routes)
    # The model's utilisation of the thread (its demand per call times the calls) when there is
    # one; py-spy's share of samples otherwise (it undercounts a thread started after the server).
    model = model_of(run) or {}
    busy = min(1.0, float((model.get("utilisation") or {}).get(ASGIREF_SHARED) or pool["average_busy_workers"]))
    names = ", ".join(f"`{f['function']}`" for f in funcs[:3])
    on = f" for {_routes_text(routes)}" if routes else ""
    ceiling = f": ~{x / busy:.0f} calls a second at most, one at a time ({x:.0f} now)" if x and busy else ""
    return [
        Verdict(
            "problem" if busy >= SHARED_THREAD_BUSY else "warning",
            f"asgiref's one shared thread ran every `sync_to_async` call{on} ({names}), busy {busy:.0%} of the "
            f"time{ceiling}: `thread_sensitive=True` (the default) outside Django's per-request "
            "`ThreadSensitiveContext` sends all such calls to one thread, so they wait in line for it whatever the "
            "load, a one-server queue. Pass `thread_sensitive=False` for code that is not bound to a thread (it "
            "then runs in the loop's default executor, min(32, cores + 4) threads), or run it in a Django view.",
        )
    ]


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
    loop = (run.get("analysis") or {}).get("loop") or {}
    sharing = [b for b in loop.get("blockers", []) if b["share"] >= BLOCKER_SHARE and b.get("file")]
    if (len(sharing) >= 2 or len(theory_table(run)) >= 2) and model_of(run):
        # Per-endpoint Little's law assumes each route has the server to itself; in a mix they
        # queue together: the model of the whole mix (model_verdicts) judges each route instead.
        return []
    if len(sharing) >= 2:
        return [
            Verdict(
                "warning",
                f"{len(sharing)} blockers share one event loop: each route's ceiling depends on the others, so the "
                "per-endpoint theory below is no verdict on any of them (the run has no figures to model the mix).",
            )
        ]
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
        # The bottleneck first: what limits the server, before what holds it.
        found = model_verdicts(run) + found + theory_verdicts(run)
    else:
        found = [v for v in found if v.level == "problem"]
    order = {"problem": 0, "warning": 1, "ok": 2}
    ranked = health_verdicts(run) + sorted(found, key=lambda v: order[v.level])
    return [v.to_dict() for v in ranked]
