"""Calls to the slow upstream stub: a sync client on the loop serialises everything."""

from tests.conftest import Server, burst, stalls_for

N, MS = 10, 100


async def test_async_and_threadpool_clients_wait_concurrently(server: Server) -> None:
    for variant in ("async", "threadpool"):
        result = await burst(f"{server.url}/upstream/{variant}?ms={MS}", N)
        assert result.statuses == [200] * N
        assert result.elapsed < 0.6, variant


async def test_sync_client_in_async_def_serialises_and_is_named(server: Server) -> None:
    result = await burst(f"{server.url}/upstream/blocking?ms={MS}", N)
    assert result.statuses == [200] * N
    assert result.elapsed >= 0.9  # one at a time: 10 × 100 ms
    await burst(f"{server.url}/upstream/blocking?ms=250", 1)
    stalls = await stalls_for(server.url, "/upstream/blocking")
    assert stalls and stalls[0]["function"] in {"call_upstream_sync", "upstream_blocking"}


async def test_upstream_down_answers_502_quickly(dead_upstream_server: Server) -> None:
    for variant in ("blocking", "threadpool", "async"):
        result = await burst(f"{dead_upstream_server.url}/upstream/{variant}?ms=50", 1)
        assert result.statuses == [502], variant
        assert result.elapsed < 2.0


async def test_hung_upstream_answers_504_within_its_bound(small_server: Server) -> None:
    # small_server's upstream accepts connections but never answers; timeout = ms + 0.3 s.
    for variant in ("blocking", "threadpool", "async"):
        result = await burst(f"{small_server.url}/upstream/{variant}?ms=100", 1)
        assert result.statuses == [504], variant
        assert 0.35 <= result.elapsed < 3.0
