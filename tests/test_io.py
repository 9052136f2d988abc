"""The I/O-wait family against a live server: 20 concurrent requests of 100 ms each."""

import pytest

from tests.conftest import Server, burst, canary_latency, stalls_for

N, MS = 20, 100


async def test_async_sleep_waits_concurrently(server: Server) -> None:
    result = await burst(f"{server.url}/io/async-sleep?ms={MS}", N)
    assert result.statuses == [200] * N
    assert result.elapsed < 0.5  # 20 × 100 ms overlap: ~0.1 s


@pytest.mark.parametrize("route", ["blocking-sleep", "helper-sleep"])
async def test_blocking_sleep_serialises_every_request(server: Server, route: str) -> None:
    result = await burst(f"{server.url}/io/{route}?ms={MS}", N)
    assert result.statuses == [200] * N
    assert result.elapsed >= 1.8  # one at a time: 20 × 100 ms
    assert {r.json()["thread"] for r in result.responses} == {"MainThread"}


@pytest.mark.parametrize("route", ["threadpool-sleep", "offload-sleep"])
async def test_threadpool_limits_concurrency_to_its_tokens(small_server: Server, route: str) -> None:
    # 5 tokens: 20 requests run in 4 waves of 100 ms.
    result = await burst(f"{small_server.url}/io/{route}?ms={MS}", N)
    assert result.statuses == [200] * N
    assert 0.38 <= result.elapsed < 1.5
    assert all(r.json()["thread"] != "MainThread" for r in result.responses)


async def test_threadpool_with_default_tokens_takes_all_at_once(server: Server) -> None:
    result = await burst(f"{server.url}/io/threadpool-sleep?ms={MS}", N)
    assert result.elapsed < 0.6


async def test_canary_suffers_only_when_the_loop_is_blocked(server: Server) -> None:
    healthy = await canary_latency(server.url, f"{server.url}/io/async-sleep?ms={MS}", 10)
    blocked = await canary_latency(server.url, f"{server.url}/io/blocking-sleep?ms={MS}", 10)
    assert blocked >= 10 * healthy, (blocked, healthy)


@pytest.mark.parametrize(
    ("route", "function"),
    [("/io/blocking-sleep", "blocking_sleep"), ("/io/helper-sleep", "sync_helper_sleep")],
)
async def test_stall_watchdog_names_the_blocking_function(server: Server, route: str, function: str) -> None:
    await burst(f"{server.url}{route}?ms=250", 1)
    stalls = await stalls_for(server.url, route)
    assert stalls, f"no stall recorded for {route}"
    latest = stalls[0]
    assert latest["function"] == function
    assert str(latest["file"]).endswith("target_app/routes/io.py")
    assert isinstance(latest["line"], int)
    assert 240 <= float(str(latest["duration_ms"])) < 2000
    assert latest["kind"] == "wait"  # time.sleep: the loop thread was off the CPU


async def test_healthy_routes_cause_no_stall(server: Server) -> None:
    await burst(f"{server.url}/io/async-sleep?ms=250", 5)
    await burst(f"{server.url}/io/threadpool-sleep?ms=250", 5)
    assert await stalls_for(server.url, "/io/async-sleep") == []
    assert await stalls_for(server.url, "/io/threadpool-sleep") == []


@pytest.mark.parametrize("query", ["ms=-1", "ms=10001", "ms=abc"])
async def test_out_of_range_ms_is_rejected(server: Server, query: str) -> None:
    result = await burst(f"{server.url}/io/blocking-sleep?{query}", 1)
    assert result.statuses == [422]
