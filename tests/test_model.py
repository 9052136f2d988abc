"""The queueing model against textbook cases with known answers (QUEUEING.md; Lazowska et al.,
*Quantitative System Performance*, ch. 5–7). Pure, in process, fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadlab.analysis.mix import measure_demands, mix_model
from loadlab.analysis.model import Mix, Station, bounds, move_demand, mva, mva_multiclass, mva_over

ONE = {"/r": 1.0}


def loop(d: float, route: str = "/r") -> Station:
    return Station("event loop", "loop", {route: d})


@pytest.mark.parametrize("users", [1, 2, 5, 20, 100])
def test_one_station_serves_one_over_its_demand_whatever_the_users(users: int) -> None:
    # The blocking demo route: 50 ms on the loop, no think time: 20 req/s for every N >= 1.
    p = mva([loop(0.05)], Mix(users, 0.0, ONE))
    assert p.throughput == pytest.approx(20.0)
    assert p.response_s == pytest.approx(users * 0.05)  # Little: N = X R
    assert p.bottleneck == "event loop" and p.utilisation["event loop"] == pytest.approx(1.0)


@pytest.mark.parametrize("users", [1, 7, 40])
def test_a_delay_only_scales_with_the_users(users: int) -> None:
    # The async demo route: 50 ms of await, nothing held: X = N / 0.05.
    p = mva([loop(0.0)], Mix(users, 0.0, ONE, delays={"/r": 0.05}))
    assert p.throughput == pytest.approx(users / 0.05)
    assert p.response_s == pytest.approx(0.05)


def test_a_forty_server_station_tends_to_forty_over_its_demand() -> None:
    # The threadpool demo route: 40 tokens, 50 ms each: 800 req/s at most.
    threads = Station("threadpool", "threads", {"/r": 0.05}, servers=40)
    assert mva([threads], Mix(2000, 0.0, ONE)).throughput == pytest.approx(800, rel=0.01)
    assert mva([threads], Mix(10, 0.0, ONE)).throughput == pytest.approx(200, rel=0.01)  # below the knee: N / D


def test_two_equal_stations_with_two_users() -> None:
    d = 0.1
    p = mva([Station("a", "loop", {"/r": d}), Station("b", "lock", {"/r": d})], Mix(2, 0.0, ONE))
    assert p.throughput == pytest.approx(2 / (3 * d))


def test_exact_mva_two_unequal_stations_by_hand() -> None:
    # n=1: R = 1 + 0.5, X = 2/3, Q = (2/3, 1/3); n=2: R = (5/3, 2/3), X = 2 / (7/3) = 6/7.
    stations = [Station("a", "loop", {"/r": 1.0}), Station("b", "threads", {"/r": 0.5})]
    p = mva(stations, Mix(2, 0.0, ONE))
    assert p.throughput == pytest.approx(6 / 7)
    assert p.response_s == pytest.approx(7 / 3)


def test_think_time_is_a_delay_station() -> None:
    # One user, D = 0.1 s, Z = 0.9 s: one request a second.
    p = mva([loop(0.1)], Mix(1, 0.9, ONE))
    assert p.throughput == pytest.approx(1.0)
    assert p.response_s == pytest.approx(0.1)


def test_asymptotic_bounds_and_the_knee() -> None:
    stations = [Station("event loop", "loop", {"/r": 0.04}), Station("lock", "lock", {"/r": 0.01})]
    light = bounds(stations, Mix(2, 0.15, ONE))
    assert light.total_demand_s == pytest.approx(0.05) and light.max_demand_s == pytest.approx(0.04)
    assert light.throughput == pytest.approx(2 / 0.2)  # N / (D + Z), below the knee
    assert light.knee_users == pytest.approx(0.2 / 0.04)  # N* = 5
    heavy = bounds(stations, Mix(20, 0.15, ONE))
    assert heavy.throughput == pytest.approx(25)  # 1 / D_max
    assert heavy.response_s == pytest.approx(20 * 0.04 - 0.15)
    assert heavy.bottleneck == "event loop"
    # MVA stays under both bounds.
    for users in (2, 5, 20):
        assert mva(stations, Mix(users, 0.15, ONE)).throughput <= bounds(stations, Mix(users, 0.15, ONE)).throughput


def test_a_mix_weights_each_routes_demand_by_its_share() -> None:
    # /a holds the loop 30 ms, /b 10 ms; half the requests each: 20 ms on average, 50 req/s saturated.
    shares = {"/a": 0.5, "/b": 0.5}
    station = Station("event loop", "loop", {"/a": 0.03, "/b": 0.01})
    p = mva([station], Mix(50, 0.0, shares))
    assert p.throughput == pytest.approx(50, rel=1e-6)
    assert p.per_route["/a"][0] == pytest.approx(25, rel=1e-6)
    # Both wait in the same queue (first come, first served); /a also holds it 20 ms longer.
    assert p.per_route["/a"][1] - p.per_route["/b"][1] == pytest.approx(0.02, rel=1e-6)
    assert sum(0.5 * r for _, r in p.per_route.values()) == pytest.approx(p.response_s)


def test_per_server_demand_names_the_bottleneck() -> None:
    loop_ = Station("event loop", "loop", {"/r": 0.01})
    threads = Station("threadpool", "threads", {"/r": 0.2}, servers=40)  # 5 ms per server
    assert bounds([loop_, threads], Mix(100, 0.0, ONE)).bottleneck == "event loop"


def test_a_bound_only_station_caps_throughput_without_queueing() -> None:
    pool = Station("process pool", "pool", {"/r": 0.02}, servers=2)
    cpu = Station("CPU", "cpu", {"/r": 0.04}, servers=2, bound_only=True)  # the app's and Locust's CPU
    p = mva([pool, cpu], Mix(20, 0.0, ONE))
    assert p.throughput == pytest.approx(50) and p.capped_by == "CPU"
    assert p.response_s == pytest.approx(20 / 50)  # Little's law on the closed loop
    assert mva([pool], Mix(20, 0.0, ONE)).throughput == pytest.approx(100, rel=0.01)


def test_a_capacity_that_comes_and_goes_is_solved_second_by_second() -> None:
    # The CPU had 1 core free one second and 2 the next: 50 then 100 req/s, 75 on average.
    pool = Station("process pool", "pool", {"/r": 0.001}, servers=2)
    cpu = Station("CPU", "cpu", {"/r": 0.02}, servers=2, bound_only=True)
    p = mva_over([pool, cpu], Mix(20, 0.0, ONE), "CPU", [1.0, 2.0])
    assert p.throughput == pytest.approx(75) and p.capped_by == "CPU"
    assert p.response_s == pytest.approx(20 / 75)


def test_fractional_users_fall_between_the_whole_populations() -> None:
    stations = [Station("a", "loop", {"/r": 1.0}), Station("b", "threads", {"/r": 0.5})]
    x1, x2 = (mva(stations, Mix(n, 0.0, ONE)).throughput for n in (1, 2))
    assert x1 < mva(stations, Mix(1.5, 0.0, ONE)).throughput < x2


def test_schweitzer_is_close_to_exact_mva_for_one_class() -> None:
    stations = [Station("a", "loop", {"/r": 0.03}), Station("b", "lock", {"/r": 0.02})]
    for users in (1, 3, 10):
        exact = mva(stations, Mix(users, 0.05, ONE)).throughput
        (x, _r), *_ = mva_multiclass({"/r": {"a": 0.03, "b": 0.02}}, {"/r": users}, {"/r": 0.05}).values()
        assert x == pytest.approx(exact, rel=0.05)


def _exact_two_class(d: dict[str, dict[str, float]], n: dict[str, int]) -> dict[str, float]:
    """Exact multi-class MVA by recursion over every population vector (Lazowska ch. 7), Z = 0."""
    stations = sorted({k for v in d.values() for k in v})
    memo: dict[tuple[int, int], dict[str, float]] = {}

    def queues(na: int, nb: int) -> dict[str, float]:
        if (na, nb) in memo:
            return memo[(na, nb)]
        q = dict.fromkeys(stations, 0.0)
        for c, m, less in (("a", na, (na - 1, nb)), ("b", nb, (na, nb - 1))):
            if m == 0:
                continue
            seen = queues(*less)
            r = {k: d[c].get(k, 0.0) * (1 + seen[k]) for k in stations}
            x = m / sum(r.values())
            for k in stations:
                q[k] += x * r[k]
            q[f"X_{c}"] = x
        memo[(na, nb)] = q
        return q

    return queues(n["a"], n["b"])


def test_schweitzer_two_classes_near_the_exact_solution() -> None:
    d = {"a": {"loop": 0.01, "lock": 0.004}, "b": {"loop": 0.03}}
    exact = _exact_two_class(d, {"a": 3, "b": 2})
    approx = mva_multiclass(d, {"a": 3, "b": 2}, {"a": 0.0, "b": 0.0})
    assert approx["a"][0] == pytest.approx(exact["X_a"], rel=0.1)
    assert approx["b"][0] == pytest.approx(exact["X_b"], rel=0.1)
    # Saturated loop: busy all the time between the two classes (utilisation law).
    assert approx["a"][0] * 0.01 + approx["b"][0] * 0.03 == pytest.approx(1.0, rel=0.1)


def test_moving_a_demand_to_the_threadpool() -> None:
    stations = [Station("event loop", "loop", {"/a": 0.05, "/b": 0.002})]
    moved = move_demand(stations, {"/a": 0.05}, "event loop", Station("threadpool", "threads", {}, servers=40))
    assert moved[0].demands == {"/a": 0.0, "/b": 0.002}
    assert moved[1].demands == {"/a": 0.05} and moved[1].servers == 40
    before = mva(stations, Mix(20, 0.0, {"/a": 0.5, "/b": 0.5})).throughput
    after = mva(moved, Mix(20, 0.0, {"/a": 0.5, "/b": 0.5})).throughput
    assert before == pytest.approx(1 / 0.026, rel=0.01) and after > 10 * before


def test_a_route_that_never_takes_the_lock_does_not_queue_for_it() -> None:
    # /reserve holds a lock 20 ms; /lookup only 1 ms of loop: with the lock saturated, reserves
    # queue there while lookups pass by in about their own time.
    stations = [
        Station("event loop", "loop", {"/reserve": 0.001, "/lookup": 0.001}),
        Station("lock", "lock", {"/reserve": 0.02}),
    ]
    p = mva(stations, Mix(10, 0.0, {"/reserve": 0.5, "/lookup": 0.5}))
    assert p.bottleneck == "lock"
    assert p.per_route["/lookup"][1] < 0.01 < 0.1 < p.per_route["/reserve"][1]
    assert sum(0.5 * r for _, r in p.per_route.values()) == pytest.approx(p.response_s)


# Measured from a recorded run: tests/apps/shop.py under its locustfile, 12 users, 6 s (the
# README's worked example).

SHOP = Path(__file__).parent / "data" / "shop-mixed.run.json"


def test_demands_measured_from_a_real_mixed_run() -> None:
    run = json.loads(SHOP.read_text())
    demands = measure_demands(run)
    assert demands is not None
    loop = next(s for s in demands["stations"] if s["name"] == "event loop")
    parts = {p["function"]: p for p in loop["parts"]}
    # A middleware costs every request the same; a dependency only its route.
    timer = parts["RequestTimer.__call__"]["demands_ms"]
    assert len(set(timer.values())) == 1 and set(timer) == {"/cart", "/export", "/health", "/orders", "/signup"}
    assert set(parts["verify_token"]["demands_ms"]) == {"/orders"}
    # The loop's demand of the mix: its busy time over the requests it served, ~12 ms.
    shares = {r: v["share"] for r, v in demands["routes"].items()}
    mixed = sum(shares[r] * d for r, d in loop["demands_ms"].items() if r in shares)
    assert 9 <= mixed <= 16
    model = mix_model(demands)
    assert model["bottleneck"] == "event loop"
    assert abs(model["measured_rps"] / model["predicted_rps"] - 1) <= 0.15, model
    what_ifs = {w["function"]: w for w in model["what_ifs"]}
    # Five other blockers still hold the loop: moving one buys a little, and the loop stays the
    # limit (or, moving the largest, the cores other processes left this run come close to it).
    assert model["measured_rps"] < what_ifs["RequestTimer.__call__"]["predicted_rps"] < 2 * model["measured_rps"]
    assert what_ifs["db_session"]["bottleneck"] == "event loop"
    assert what_ifs["(all of them)"]["bottleneck"].startswith("CPU (2 cores, shared with Locust)")
    assert what_ifs["export_catalog"]["to"] == "a process pool" and what_ifs["db_session"]["to"] == "the threadpool"
    assert what_ifs["(all of them)"]["predicted_rps"] > max(w["predicted_rps"] for w in model["what_ifs"][:-1])


def test_no_profile_no_model() -> None:
    run = json.loads(SHOP.read_text())
    assert measure_demands({**run, "analysis": None}) is None


def test_the_bottleneck_names_only_blockers_that_round_to_a_share(monkeypatch: pytest.MonkeyPatch) -> None:
    from loadlab.analysis import verdicts

    route = {"route": "/x", "demands_ms": {"event loop": 51.0}, "delay_ms": 0.4, "predicted_rps": 19.5,
             "measured_rps": 19.7, "predicted_ms": 914.0, "measured_ms": 917.0, "requests": 170}  # fmt: skip
    model = {"predicted_rps": 19.5, "measured_rps": 19.7, "ratio": 1.01, "bottleneck": "event loop",
             "utilisation": {"event loop": 1.0}, "knee_users": 1.0, "users": 18, "think_ms": 0.0,
             "routes": [route], "what_ifs": []}  # fmt: skip
    monkeypatch.setattr(verdicts, "model_of", lambda run: model)
    blockers = [
        {"function": "blocking_sleep", "file": "/app/io.py", "share": 0.86},
        {"function": "thread_name", "file": "/app/params.py", "share": 0.004},  # a call the handler makes, ~0%
    ]
    text = verdicts.model_verdicts({"analysis": {"loop": {"blockers": blockers}}})[0].text
    assert "held mostly by `blocking_sleep` (86%)." in text and "thread_name" not in text, text
