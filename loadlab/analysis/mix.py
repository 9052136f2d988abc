"""The queueing model of a run's whole mix: each route's demands measured, the model solved.

:func:`measure_demands` reads a run (the profile's analysis, the loop sampler's routes, Locust's
figures, the CPU meter) and returns run.json's ``demands``: the stations the requests held and
how long one request of each route held each, with the closed population Locust made (users,
think time). :func:`mix_model` solves it (:mod:`loadlab.analysis.model`): predicted throughput
and response time per route and for the mix next to the measured, the bottleneck, and for each
blocker of the loop what moving it off the loop would buy.

How each demand is measured (``D = busy time attributed to the route / its completed requests``):

- **event loop** (one server per worker process): the loop threads' busy py-spy samples. A
  blocker with one route is that route's; one on several routes (a middleware, a shared helper)
  is split as the app's loop sampler saw it serve each route, else by requests (a middleware always
  by requests: every request passes it once); what no function
  of the app holds (the server's and framework's own work) is spread evenly over every request.
- **threadpool** (thread tokens servers): worker-thread samples outside lock waits, per route.
- **a lock** worker threads queued for (one server): the samples its holders spent past it.
- **CPU** (cores, shared with Locust when it runs here): the server's and Locust's CPU time per
  request. It is a bound, not a queue: that time is already inside the demands above.
- a route's **delay**: its response on the idle server (the service probe, else Locust's fastest)
  beyond its demands — awaited sleeps and remote calls, which hold no station.
- **think time** ``Z = N / X − R`` (Little's law on the closed loop), with ``N`` the users averaged
  over the window (the ramp-up counts at half).

Samples become seconds at the rate py-spy achieved (the loop thread's samples over the time it
was profiled), not the rate asked: on a busy machine py-spy falls behind.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

from loadlab.analysis.frameworks import (
    ANYIO_POOL,
    ASGIREF_PER_REQUEST,
    ASGIREF_SHARED,
    EXECUTOR_FRAMEWORKS,
    LOOP_EXECUTOR_POOL,
    default_executor_size,
)
from loadlab.analysis.model import Mix, Prediction, Station, bounds, move_demand, mva, mva_over
from loadlab.analysis.theory import thread_tokens
from loadlab.results import AGGREGATED, stats_rows

__all__ = ["WHAT_IF_TWINS", "measure_demands", "mix_model", "what_if_check"]

CANARY_ROW = "/health (canary)"  # loadtests.common.CANARY_NAME: a user of its own, not of the mix
# A blocker worth a what-if: this share of the loop's samples (as verdicts.BLOCKER_SHARE).
WHAT_IF_SHARE = 0.05
# Predicted within this of measured: the model fits the run.
FIT = 0.15
# The lock-wait share above which a worker function's lock is a station (as verdicts.LOCK_WAIT_SHARE).
LOCK_WAIT_SHARE = 0.3
SERVICE_PROBES = 5  # loadlab.measure.SERVICE_PROBES: sequential requests per route after the load
PROFILED_PHASES = ("server", "ready", "load", "stopping")
LOOP = "event loop"
THREADS = "threadpool"
POOL = "process pool"


def _route_of_row(name: str) -> str:
    return "/health" if name == CANARY_ROW else name


def _matches(template: str, name: str) -> bool:
    """A route template (``/items/{id}``) and a Locust row's name (``/items/7`` or the template)."""
    if template == name:
        return True
    t, n = template.strip("/").split("/"), name.split("?")[0].strip("/").split("/")
    return len(t) == len(n) and all(
        a == b or (a.startswith("{") and a.endswith("}")) for a, b in zip(t, n, strict=True)
    )


def _rows_for(route: str | None, names: list[str]) -> list[str]:
    return [n for n in names if route is not None and _matches(route, _route_of_row(n))]


def _sample_hz(run: dict[str, Any], analysis: dict[str, Any]) -> float:
    """The rate py-spy reached on the loop thread: its samples over the time the server was profiled."""
    timings = run.get("timings_s") or {}
    wall = sum(float(timings.get(p) or 0) for p in PROFILED_PHASES)
    loops = [t for t in analysis.get("threads", []) if t.get("role") == "event loop"]
    asked = float((run.get("config") or {}).get("rate") or 100)
    if (run.get("profiler") or {}).get("loop") == "sampler":
        return asked  # the app's sampler weighs each look by the time it stands for: counts are at --rate
    if wall <= 0 or not loops:
        return asked
    achieved = sum(int(t["samples"]) for t in loops) / len(loops) / wall
    return min(asked, achieved) if achieved > 0.3 * asked else asked


def _spread(samples: float, rows: list[str], completed: dict[str, float]) -> dict[str, float]:
    """Samples shared by ``rows`` in proportion to their requests."""
    total = sum(completed[r] for r in rows)
    return {r: samples * completed[r] / total for r in rows} if total else {}


def _split_by_sampler(
    blocker: dict[str, Any], rows: list[str], completed: dict[str, float], loop_samples: dict[str, Any] | None
) -> dict[str, float]:
    """A blocker's samples per row: as the loop sampler saw the function serve each route, else
    by requests over the routes it hits (every route, for one that names none)."""
    seen: Counter[str] = Counter()
    if blocker.get("place") == "middleware":
        # Every request passes a middleware once, doing the same: by requests (the sampler's few
        # looks per route would only add noise).
        return _spread(blocker["samples"], rows, completed)
    for s in (loop_samples or {}).get("samples", []):
        if s.get("function") == blocker["function"] and s.get("file") == blocker.get("file") and s.get("route"):
            for row in _rows_for(str(s["route"]), rows):
                seen[row] += int(s["cpu"]) + int(s["wait"]) + int(s["gil"])
    if sum(seen.values()) >= 5:
        total = sum(seen.values())
        return {r: blocker["samples"] * n / total for r, n in seen.items()}
    hit = [r for route in blocker.get("routes") or [] for r in _rows_for(route, rows)]
    return _spread(blocker["samples"], hit or rows, completed)


def _metered(run: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The meter's readings of ``key``, from the end of the first second: Locust starting up
    (importing, spawning its users) is no cost of the requests."""
    points = [p for p in run.get("timeseries", []) if isinstance(p.get(key), int | float)]
    return points[1:] if len(points) >= 3 else []


def _span(run: dict[str, Any], key: str) -> float:
    """Seconds the meter covered with ``key``."""
    ts = [float(p.get("t", 0)) for p in _metered(run, key)]
    return ts[-1] - ts[0] if len(ts) >= 2 else 0.0


def _others_by_second(run: dict[str, Any]) -> list[float]:
    """The cores the rest of the machine used in each metered second (machine − server − Locust)."""
    out = []
    for p in _metered(run, "machine_cpu_percent")[1:]:
        used = float(p.get("server_cpu_percent") or 0) + float(p.get("locust_cpu_percent") or 0)
        out.append(max(0.0, float(p["machine_cpu_percent"]) - used) / 100)
    return out


def _cpu_seconds(run: dict[str, Any], key: str) -> float:
    """CPU seconds a process tree used during the load, from the once-a-second meter."""
    points = _metered(run, key)
    total = 0.0
    for a, b in zip(points, points[1:], strict=False):
        total += float(b[key]) / 100 * max(0.0, float(b.get("t", 0)) - float(a.get("t", 0)))
    return total


def measure_demands(run: dict[str, Any]) -> dict[str, Any] | None:
    """run.json's ``demands``: stations, per-route demands (ms), the closed population. None
    without a profile or Locust figures to measure from."""
    analysis = run.get("analysis")
    rows = [s for s in stats_rows(run) if s["name"] != AGGREGATED and (s.get("requests") or 0) > 0]
    if not analysis or not rows or not (analysis.get("loop") or {}).get("samples"):
        return None
    cfg = run.get("config") or {}
    names = [s["name"] for s in rows]
    probe = run.get("service_probe") or {}
    # Every request the server completed: Locust's, and the probe's after the load.
    completed = {s["name"]: float(s["requests"]) + (SERVICE_PROBES if s["name"] in probe else 0) for s in rows}
    hz = _sample_hz(run, analysis)
    loop_samples = run.get("loop_samples")

    def ms(samples: dict[str, float]) -> dict[str, float]:
        return {r: round(n / hz / completed[r] * 1000, 3) for r, n in samples.items() if completed[r] and n > 0}

    # The event loop: each blocker of the app, then the rest (server, framework) on every request.
    loop = analysis["loop"]
    busy = int(loop.get("samples") or 0) - int((loop.get("kinds") or {}).get("parked", 0))
    parts, attributed = [], 0.0
    for b in loop.get("blockers", []):
        if not b.get("file"):
            continue
        split = _split_by_sampler(b, names, completed, loop_samples)
        attributed += sum(split.values())
        parts.append(
            {
                "function": b["function"],
                "kind": b.get("kind", "unknown"),
                "gil_released": b.get("gil_released"),
                "share": b["share"],
                "demands_ms": ms(split),
            }
        )
    rest = _spread(max(0.0, busy - attributed), names, completed)
    parts.append({"function": "(server and framework)", "kind": "cpu", "share": None, "demands_ms": ms(rest)})
    stations = [_station(LOOP, "loop", int(cfg.get("workers", 1)), parts)]

    # Worker threads: per function, the samples outside lock waits; a lock's holders are its
    # station. Each pool the sync code ran in is a station of its own size (see _POOL_STATIONS).
    threads: dict[str, list[dict[str, Any]]] = {}
    locks: dict[str, list[dict[str, Any]]] = {}
    for f in (analysis.get("threadpool") or {}).get("by_function", []):
        held = f.get("held_samples")
        if held is None or held <= 0:
            continue
        hit = _rows_for(f.get("route"), names) or names
        part = {"function": f["function"], "kind": "threads", "demands_ms": ms(_spread(held, hit, completed))}
        lock = f.get("lock")
        if lock and f.get("lock_wait_share", 0) >= LOCK_WAIT_SHARE:
            locks.setdefault(f"lock {lock['file'].rsplit('/', 1)[-1]}:{lock['line']}", []).append(part)
        else:
            threads.setdefault(str(f.get("pool") or ANYIO_POOL), []).append(part)
    for pool, pool_parts in threads.items():
        name, servers = _pool_station(pool, run)
        stations.append(_station(name, "threads", servers, pool_parts))
    for name, held_parts in locks.items():
        stations.append(_station(name, "lock", 1, held_parts))

    # The CPU: the server's time, and Locust's when it runs on the same cores; the cores other
    # processes took meanwhile (py-spy, other users' work) are not there to be had.
    cores = int((run.get("machine") or {}).get("cores") or os.cpu_count() or 1)
    seconds = {key: _cpu_seconds(run, f"{key}_cpu_percent") for key in ("server", "locust", "machine")}
    span = _span(run, "server_cpu_percent")
    x_all = sum(float(s["rps"]) for s in rows)
    machine_span = _span(run, "machine_cpu_percent")
    # No server meter (a server on another host, through an agent): its CPU is not on these cores.
    others = (
        max(0.0, seconds["machine"] - seconds["server"] - seconds["locust"]) / span if machine_span and span else 0.0
    )
    # What the server burns serving nothing (its instrumentation, py-spy's pauses) is a load of
    # its own on the cores, not a cost per request.
    idle = float(run.get("server_idle_cpu_percent") or 0.0) / 100
    rate = {"server": max(0.0, seconds["server"] / span - idle) if span else 0.0}
    rate["locust"] = seconds["locust"] / span if span else 0.0
    others += idle
    cpu_parts = [
        {
            "function": who,
            "kind": "cpu",
            # its CPU rate over the metered seconds, divided by the requests a second served
            "demands_ms": ms({r: rate[key] / x_all * hz * completed[r] for r in names}),
        }
        for key, who in (("server", "server"), ("locust", "Locust"))
        if seconds[key] > 0 and span > 0 and x_all > 0
    ]
    local = not cfg.get("target_host")
    if cpu_parts and local:
        cpu = _station(
            f"CPU ({cores} cores{', shared with Locust' if len(cpu_parts) > 1 else ''})", "cpu", cores, cpu_parts
        )
        cpu["available"] = round(max(0.5, cores - others), 2)
        # and second by second: other users' work on a shared machine comes and goes
        cpu["available_by_second"] = [round(max(0.5, cores - o - idle), 2) for o in _others_by_second(run)]
        stations.append(cpu)
    if cpu_parts and cpu_parts[-1]["function"] == "Locust":
        # Locust's own process (one per --locust-processes) computes every request it sends.
        generator = [{"function": "Locust", "kind": "cpu", "demands_ms": cpu_parts[-1]["demands_ms"]}]
        stations.append(
            _station("load generator (Locust)", "generator", int(cfg.get("locust_processes") or 1), generator)
        )

    # The closed population: who loaded the mix, and how long each thought between requests.
    mix_rows = [s for s in rows if s["name"] != CANARY_ROW]
    users = max(1, int(cfg.get("users", 1)) - (1 if len(mix_rows) < len(rows) else 0))
    duration = float(cfg.get("duration") or 0)
    ramp = min(duration, int(cfg.get("users", 1)) / float(cfg.get("spawn_rate") or 1e9)) if duration else 0.0
    users_avg = users * (1 - ramp / (2 * duration)) if duration else float(users)
    x = sum(float(s["rps"]) for s in mix_rows)
    requests = sum(s["requests"] for s in mix_rows)
    r = sum(float(s.get("avg_ms") or 0) * s["requests"] for s in mix_rows) / requests / 1000 if requests else 0.0
    think = max(0.0, users_avg / x - r) if x > 0 else 0.0
    routes = {}
    queued = [s for s in stations if s["kind"] not in ("cpu", "generator")]
    # A route the probe could not ask (a POST) has only Locust's fastest answer, which under load
    # includes some queueing: take off the least that the probed routes' fastest answers did.
    queueing = min(
        (float(s.get("min_ms") or 0) - probe[s["name"]] for s in rows if s["name"] in probe and s.get("min_ms")),
        default=0.0,
    )
    for s in mix_rows:
        idle = probe.get(s["name"]) or max(0.0, float(s.get("min_ms") or 0.0) - max(0.0, queueing))
        held = sum(st["demands_ms"].get(s["name"], 0.0) for st in queued)
        routes[s["name"]] = {
            "share": round(s["requests"] / requests, 4),
            "delay_ms": round(max(0.0, float(idle) - held), 3),
            "idle_ms": idle,
            "measured_rps": s["rps"],
            "requests": s["requests"],
            "measured_ms": s.get("avg_ms"),
        }
    return {
        "sample_hz": round(hz, 1),
        "users": round(users_avg, 2),
        "think_ms": round(think * 1000, 2),
        "measured_rps": round(x, 2),
        "measured_ms": round(r * 1000, 2),
        "routes": routes,
        "stations": stations,
        "process_pool": int((run.get("env") or {}).get("LOADLAB_PROCESS_WORKERS") or min(cores, 8)),
        "framework": analysis.get("framework"),
    }


def _pool_station(pool: str, run: dict[str, Any]) -> tuple[str, int]:
    """The station of a pool and its servers: AnyIO's threadpool (its limiter's tokens), the
    loop's default executor (``min(32, cores + 4)`` threads), asgiref's shared thread (one), or
    asgiref's thread per request (as many as there are users)."""
    cores = int((run.get("machine") or {}).get("cores") or os.cpu_count() or 1)
    if pool == LOOP_EXECUTOR_POOL:
        return LOOP_EXECUTOR_POOL, default_executor_size(cores)
    if pool == ASGIREF_SHARED:
        return ASGIREF_SHARED, 1
    if pool == ASGIREF_PER_REQUEST:
        return ASGIREF_PER_REQUEST, max(1, int((run.get("config") or {}).get("users") or 1))
    return THREADS, thread_tokens(run)


def _station(name: str, kind: str, servers: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    demands: Counter[str] = Counter()
    for p in parts:
        demands.update(p["demands_ms"])
    return {
        "name": name,
        "kind": kind,
        "servers": servers,
        "demands_ms": {r: round(d, 3) for r, d in sorted(demands.items())},
        "parts": parts,
    }


# -- Solving -----------------------------------------------------------------------------------


def _stations(demands: dict[str, Any]) -> list[Station]:
    return [
        Station(
            s["name"],
            s["kind"],
            {r: d / 1000 for r, d in s["demands_ms"].items()},
            servers=int(s["servers"]),
            bound_only=s["kind"] in ("cpu", "generator"),
            capacity=s.get("available"),
        )
        for s in demands["stations"]
    ]


def _mix(demands: dict[str, Any]) -> Mix:
    routes = demands["routes"]
    return Mix(
        users=float(demands["users"]),
        think_s=float(demands["think_ms"]) / 1000,
        shares={r: float(v["share"]) for r, v in routes.items()},
        delays={r: float(v["delay_ms"]) / 1000 for r, v in routes.items()},
    )


def _target(part: dict[str, Any], demands: dict[str, Any], stations: list[Station]) -> tuple[Station, str] | None:
    """Where a loop blocker would go, by its kind: waiting and GIL-free C to the threadpool, Python
    (the GIL held) to a process pool; None for the GIL starved (the cure is elsewhere)."""
    kind = part.get("kind")
    cores = next((s.servers for s in stations if s.kind == "cpu"), os.cpu_count() or 1)
    if kind == "gil":
        return None
    if kind == "cpu" and not part.get("gil_released"):
        pool = Station(POOL, "pool", {}, servers=max(1, min(int(demands.get("process_pool") or cores), cores)))
        return pool, "a process pool"
    if demands.get("framework") in EXECUTOR_FRAMEWORKS:
        # Django's sync_to_async(thread_sensitive=False), Quart's run_sync, Falcon's sync_to_async,
        # Litestar's sync_to_thread (on asyncio): the loop's default executor.
        size = default_executor_size(cores)
        return Station(LOOP_EXECUTOR_POOL, "threads", {}, servers=size), "the loop's default executor"
    tokens = next((s.servers for s in stations if s.name == THREADS), 40)
    return Station(THREADS, "threads", {}, servers=tokens), "the threadpool"


def mix_model(demands: dict[str, Any]) -> dict[str, Any]:
    """The model's answer for a run's ``demands``: prediction next to measured (mix and routes),
    bounds, the bottleneck, and a what-if per blocker of the loop."""
    stations, mix = _stations(demands), _mix(demands)
    cpu = next((s for s in demands["stations"] if s.get("available_by_second")), None)

    def solve(stations: list[Station]) -> Prediction:
        if cpu is None:
            return mva(stations, mix)
        return mva_over(stations, mix, cpu["name"], [float(c) for c in cpu["available_by_second"]])

    p = solve(stations)
    b = bounds(stations, mix)
    measured = float(demands["measured_rps"])
    what_ifs = []
    loop = next((s for s in demands["stations"] if s["name"] == LOOP), None)
    for part in (loop or {}).get("parts", []):
        if part.get("share") is None or part["share"] < WHAT_IF_SHARE:
            continue
        target = _target(part, demands, stations)
        if target is None:
            continue
        station, where = target
        moved = {r: d / 1000 for r, d in part["demands_ms"].items()}
        after = solve(move_demand(stations, moved, LOOP, station))
        what_ifs.append(
            {
                "function": part["function"],
                "kind": part["kind"],
                "to": where,
                "predicted_rps": round(after.throughput, 1),
                "bottleneck": after.bottleneck,
                "bottleneck_utilisation": round(after.utilisation.get(after.bottleneck or "", 0.0), 3),
            }
        )
    if len(what_ifs) > 1:
        everything = stations
        for part in (loop or {}).get("parts", []):
            if (
                part.get("share") is not None
                and part["share"] >= WHAT_IF_SHARE
                and (t := _target(part, demands, stations))
            ):
                moved = {r: d / 1000 for r, d in part["demands_ms"].items()}
                everything = move_demand(everything, moved, LOOP, t[0])
        after = solve(everything)
        what_ifs.append(
            {
                "function": "(all of them)",
                "kind": "",
                "to": "where each would go",
                "predicted_rps": round(after.throughput, 1),
                "bottleneck": after.bottleneck,
                "bottleneck_utilisation": round(after.utilisation.get(after.bottleneck or "", 0.0), 3),
            }
        )
    return {
        "predicted_rps": round(p.throughput, 1),
        "measured_rps": round(measured, 1),
        "ratio": round(measured / p.throughput, 3) if p.throughput else None,
        "predicted_ms": round(p.response_s * 1000, 1),
        "measured_ms": demands["measured_ms"],
        "bottleneck": p.bottleneck,
        "capped_by": p.capped_by,
        "utilisation": {k: round(v, 3) for k, v in p.utilisation.items()},
        "bound_rps": round(b.throughput, 1),
        "knee_users": round(b.knee_users, 1) if b.knee_users else None,
        "users": demands["users"],
        "think_ms": demands["think_ms"],
        "routes": [_route_row(r, v, p, stations) for r, v in demands["routes"].items()],
        "what_ifs": what_ifs,
    }


def _route_row(route: str, measured: dict[str, Any], p: Prediction, stations: list[Station]) -> dict[str, Any]:
    x, r = p.per_route.get(route, (0.0, 0.0))
    held = {s.name: round(s.demands.get(route, 0.0) * 1000, 2) for s in stations if s.demands.get(route)}
    return {
        "route": route,
        "demands_ms": held,
        "delay_ms": measured["delay_ms"],
        "predicted_rps": round(x, 1),
        "measured_rps": measured["measured_rps"],
        "predicted_ms": round(r * 1000, 1),
        "measured_ms": measured["measured_ms"],
        "requests": measured.get("requests"),
    }


# The demonstration's real changes, each predicted from the run before it: (scenario, the
# blocking variant's tag, its offloaded twin's tag, the blocker the twin moves off the loop).
WHAT_IF_TWINS = (
    ("io", "blocking-sleep", "threadpool-sleep", "blocking_sleep"),
    ("io", "helper-sleep", "offload-sleep", "sync_helper_sleep"),
    ("cpu", "async", "process", "burn_cpu"),
)


def what_if_check(source: dict[str, Any], twin: dict[str, Any], function: str) -> dict[str, Any] | None:
    """The model's what-if for ``function`` from the ``source`` run against the ``twin`` run,
    where the change was made: predicted and measured throughput of the mix (the canary aside)."""
    demands = source.get("demands") or measure_demands(source)
    if not demands:
        return None
    model = mix_model(demands)
    w = next((w for w in model["what_ifs"] if w["function"] == function), None)
    rows = [s for s in stats_rows(twin) if s["name"] not in (AGGREGATED, CANARY_ROW)]
    measured = sum(float(s["rps"]) for s in rows)
    if w is None or not measured:
        return None
    return {
        "function": function,
        "to": w["to"],
        "before_rps": model["measured_rps"],
        "predicted_rps": w["predicted_rps"],
        "measured_rps": round(measured, 1),
        "ratio": round(measured / w["predicted_rps"], 3) if w["predicted_rps"] else None,
        "bottleneck": w["bottleneck"],
    }
