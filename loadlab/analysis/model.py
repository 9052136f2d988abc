"""A queueing model of a server under a closed load: stations, demands, bounds and MVA.

Pure arithmetic, no run data (see :mod:`loadlab.analysis.mix` for the measuring). The formulas
are those of Lazowska et al., *Quantitative System Performance* (1984), ch. 3, 5–7, as written up
in ``QUEUEING.md``:

- a **station** is something a request holds: the event loop of a worker (one server), the
  threadpool (``servers`` = thread tokens), a lock (one server), a process pool, the CPU cores;
- a **class** is a route; its **demand** ``D_ck`` at station ``k`` is the time one request of the
  class holds the station, in seconds;
- Locust's users are a closed population: ``users`` of them, each thinking ``think_s`` between
  an answer and its next request, and picking a route by the task weights (``shares``: each
  route's share of the requests). ``delays`` are a route's pure waiting (``await`` of a sleep or a
  remote service with ample capacity): time in the response, at no station.

The mix is solved as one class with share-weighted demands (exact MVA, each user picks a route
per request as Locust's do), and each route's response time follows from the arrival theorem.
:func:`mva_multiclass` (Schweitzer–Bard) is there for users dedicated to one route each.
A station with ``bound_only`` (the CPU, whose time is already inside the loop's and the threads'
demands) caps the throughput but adds no queue of its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

__all__ = [
    "Bounds",
    "Mix",
    "Prediction",
    "Station",
    "bounds",
    "move_demand",
    "mva",
    "mva_multiclass",
    "mva_over",
]


@dataclass(frozen=True)
class Station:
    name: str
    kind: str  # "loop", "threads", "lock", "pool", "cpu" (free text for other stations)
    demands: Mapping[str, float]  # route -> seconds one request holds this station
    servers: int = 1
    bound_only: bool = False
    capacity: float | None = None  # servers actually available (CPU cores others left), if fewer

    def demand(self, shares: Mapping[str, float]) -> float:
        """The mix's demand here: each route's, weighted by its share of the requests."""
        return sum(shares.get(c, 0.0) * d for c, d in self.demands.items())


@dataclass(frozen=True)
class Mix:
    users: float
    think_s: float
    shares: Mapping[str, float]  # route -> share of the requests (sums to 1)
    delays: Mapping[str, float] = field(default_factory=dict)  # route -> pure waiting, seconds

    def delay(self) -> float:
        return sum(p * self.delays.get(c, 0.0) for c, p in self.shares.items())


@dataclass(frozen=True)
class Bounds:
    """Asymptotic bounds of the mix: ``X(N) <= min(N / (D + Z), 1 / D_max)``."""

    total_demand_s: float  # D: every station's demand plus the pure delays
    max_demand_s: float  # D_max, per server
    bottleneck: str | None
    throughput: float  # the bound on X at this many users, req/s
    response_s: float  # the bound on R: max(D, N * D_max - Z)
    knee_users: float | None  # N* = (D + Z) / D_max


@dataclass(frozen=True)
class Prediction:
    throughput: float  # req/s, the whole mix
    response_s: float  # mean response time
    per_route: dict[str, tuple[float, float]]  # route -> (req/s, response time s)
    utilisation: dict[str, float]  # station -> U per server (0..1)
    bottleneck: str | None  # the station with the highest utilisation
    capped_by: str | None  # a bound-only station that capped the MVA's throughput


def _per_server(s: Station, shares: Mapping[str, float]) -> float:
    return s.demand(shares) / (s.capacity if s.capacity is not None and s.capacity > 0 else max(1, s.servers))


def bounds(stations: list[Station], mix: Mix) -> Bounds:
    queueing = [s for s in stations if not s.bound_only]
    total = sum(s.demand(mix.shares) for s in queueing) + mix.delay()
    per_server = {s.name: _per_server(s, mix.shares) for s in stations}
    bottleneck = max(per_server, key=lambda k: per_server[k]) if per_server else None
    d_max = per_server[bottleneck] if bottleneck else 0.0
    cycle = total + mix.think_s
    throughput = min(mix.users / cycle if cycle > 0 else float("inf"), 1 / d_max if d_max > 0 else float("inf"))
    return Bounds(
        total_demand_s=total,
        max_demand_s=d_max,
        bottleneck=bottleneck if d_max > 0 else None,
        throughput=throughput,
        response_s=max(total, mix.users * d_max - mix.think_s),
        knee_users=cycle / d_max if d_max > 0 else None,
    )


def mva(stations: list[Station], mix: Mix) -> Prediction:
    """Exact MVA of the mix as one class (share-weighted demands), multi-server stations by
    Seidmann's approximation (demand ``D/m`` queueing, ``D(m-1)/m`` delay), fractional users by
    interpolating between the two nearest whole populations."""
    queueing = [s for s in stations if not s.bound_only]
    demands = [s.demand(mix.shares) for s in queueing]
    servers = [max(1, s.servers) for s in queueing]
    fixed = mix.think_s + mix.delay() + sum(d * (m - 1) / m for d, m in zip(demands, servers, strict=True))
    whole = int(mix.users)
    queues = [0.0] * len(queueing)
    history = [(0.0, queues)]
    for n in range(1, max(1, whole) + 1):
        residence = [d / m * (1 + q) for d, m, q in zip(demands, servers, queues, strict=True)]
        cycle = fixed + sum(residence)
        x = n / cycle if cycle > 0 else float("inf")
        queues = [x * r for r in residence]
        history.append((x, queues))
    frac = mix.users - whole
    if whole >= 1 and frac > 0:
        # one more step, and the figures between the two populations
        residence = [d / m * (1 + q) for d, m, q in zip(demands, servers, queues, strict=True)]
        x_next = (whole + 1) / (fixed + sum(residence))
        q_next = [x_next * r for r in residence]
        x = history[-1][0] * (1 - frac) + x_next * frac
        before = history[-2][1]  # the queues an arriving request sees at N-1 users
        seen = [a * (1 - frac) + b * frac for a, b in zip(before, queues, strict=True)]
        queues = [a * (1 - frac) + b * frac for a, b in zip(queues, q_next, strict=True)]
    else:
        x = history[-1][0]
        seen = history[-2][1] if len(history) >= 2 else [0.0] * len(queueing)
    # What bounds the throughput that the queues do not see (the CPU, shared by everything).
    capped_by = None
    for s in stations:
        if s.bound_only and (d := _per_server(s, mix.shares)) > 0 and 1 / d < x:
            x, capped_by = 1 / d, s.name
    # Each route's response: its own demands, plus the queue it finds (arrival theorem). A queue
    # is served first come, first served: a short request waits for the long ones ahead of it
    # (an event loop runs its ready callbacks in order), so it waits the queue times the mix's
    # mean time per visit, not its own; a route that never visits a station never queues there.
    # The mix's mean response is the same either way.
    visits = [sum(p for c, p in mix.shares.items() if s.demands.get(c, 0.0) > 0) for s in queueing]
    per_route: dict[str, tuple[float, float]] = {}
    for c, p in mix.shares.items():
        r = mix.delays.get(c, 0.0)
        for s, d_mix, v, q in zip(queueing, demands, visits, seen, strict=True):
            d, m = s.demands.get(c, 0.0), max(1, s.servers)
            r += d + (q * d_mix / v / m if d > 0 else 0.0)
        per_route[c] = (x * p, r)
    response = sum(p * per_route[c][1] for c, p in mix.shares.items())
    if capped_by is not None:
        # Little's law on the closed loop: the users not thinking wait somewhere, in proportion.
        stretched = mix.users / x - mix.think_s
        scale = stretched / response if response > 0 else 1.0
        per_route = {c: (xc, rc * scale) for c, (xc, rc) in per_route.items()}
        response = stretched
    utilisation = {s.name: min(1.0, x * _per_server(s, mix.shares)) for s in stations}
    bottleneck = max(utilisation, key=lambda k: utilisation[k]) if utilisation else None
    return Prediction(
        throughput=x,
        response_s=response,
        per_route=per_route,
        utilisation=utilisation,
        bottleneck=bottleneck if bottleneck and utilisation[bottleneck] > 0 else None,
        capped_by=capped_by,
    )


def mva_over(stations: list[Station], mix: Mix, station: str, capacities: list[float]) -> Prediction:
    """MVA solved once per capacity the station named ``station`` had (the CPU cores other
    processes left, second by second), averaged: on a machine whose spare capacity comes and goes,
    the mean of the throughputs, not the throughput of the mean capacity."""
    solved = [
        mva([replace(s, capacity=c) if s.name == station else s for s in stations], mix) for c in capacities if c > 0
    ]
    if not solved:
        return mva(stations, mix)
    n = len(solved)
    x = sum(p.throughput for p in solved) / n
    per_route = {
        c: (sum(p.per_route[c][0] for p in solved) / n, sum(p.per_route[c][1] for p in solved) / n)
        for c in solved[0].per_route
    }
    utilisation = {k: sum(p.utilisation[k] for p in solved) / n for k in solved[0].utilisation}
    bottleneck = max(utilisation, key=lambda k: utilisation[k]) if utilisation else None
    capped = [p.capped_by for p in solved if p.capped_by]
    return Prediction(
        throughput=x,
        response_s=max(0.0, mix.users / x - mix.think_s) if x > 0 else 0.0,
        per_route=per_route,
        utilisation=utilisation,
        bottleneck=bottleneck if bottleneck and utilisation[bottleneck] > 0 else None,
        capped_by=max(set(capped), key=capped.count) if capped else None,
    )


def mva_multiclass(
    demands: Mapping[str, Mapping[str, float]],
    populations: Mapping[str, float],
    think_s: Mapping[str, float],
    servers: Mapping[str, int] | None = None,
    tolerance: float = 1e-9,
    max_iterations: int = 10_000,
) -> dict[str, tuple[float, float]]:
    """Schweitzer–Bard approximate MVA for classes with their own users: ``demands[class][station]``
    in seconds, ``populations[class]`` users each; returns ``class -> (X_c, R_c)``."""
    stations = sorted({k for d in demands.values() for k in d})
    m = {k: max(1, (servers or {}).get(k, 1)) for k in stations}
    classes = [c for c in demands if populations.get(c, 0) > 0]
    q = {c: {k: populations[c] / len(stations) if stations else 0.0 for k in stations} for c in classes}
    out: dict[str, tuple[float, float]] = {}
    for _ in range(max_iterations):
        delta = 0.0
        for c in classes:
            n = populations[c]
            residence = {}
            for k in stations:
                d = demands[c].get(k, 0.0)
                seen = sum(q[j][k] for j in classes) - q[c][k] / n
                residence[k] = d / m[k] * (1 + seen) + d * (m[k] - 1) / m[k]
            r = sum(residence.values())
            x = n / (think_s.get(c, 0.0) + r) if think_s.get(c, 0.0) + r > 0 else float("inf")
            for k in stations:
                new = x * residence[k]
                delta = max(delta, abs(new - q[c][k]))
                q[c][k] = new
            out[c] = (x, r)
        if delta < tolerance:
            break
    return out


def move_demand(stations: list[Station], routes: Mapping[str, float], source: str, target: Station) -> list[Station]:
    """The stations after ``routes``' demands (route -> seconds) move from the station named
    ``source`` to ``target`` (added to a station of the same name if there is one)."""
    out = []
    merged = False
    for s in stations:
        if s.name == source:
            left = {c: max(0.0, d - routes.get(c, 0.0)) for c, d in s.demands.items()}
            s = replace(s, demands=left)
        if s.name == target.name:
            added = dict(s.demands)
            for c, d in routes.items():
                added[c] = added.get(c, 0.0) + d
            s = replace(s, demands=added)
            merged = True
        out.append(s)
    if not merged:
        out.append(replace(target, demands={**target.demands, **routes}))
    return out
