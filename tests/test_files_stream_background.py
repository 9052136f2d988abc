"""Files, streaming bodies and background tasks follow the same rules as handlers."""

import asyncio
import time

import httpx

from tests.conftest import Server, burst, canary_latency, stalls_for


async def test_file_variants_read_the_same_bytes(server: Server) -> None:
    for variant in ("blocking", "async"):
        result = await burst(f"{server.url}/files/{variant}?kb=2048", 3)
        assert [r.json()["bytes"] for r in result.responses] == [2048 * 1024] * 3


async def _stream_arrivals(url: str) -> list[float]:
    async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", url) as response:
        start = time.perf_counter()
        return [time.perf_counter() - start async for _ in response.aiter_lines()]


async def test_async_and_sync_streams_spread_their_chunks(server: Server) -> None:
    for variant in ("async", "sync"):
        arrivals = await _stream_arrivals(f"{server.url}/stream/{variant}?chunks=5&ms=100")
        assert len(arrivals) == 5
        assert arrivals[-1] - arrivals[0] >= 0.3, variant


async def test_blocking_stream_freezes_everyone_else(server: Server) -> None:
    # The streaming client itself still gets chunks as they are written (the transport writes at
    # once), but the loop is held for the whole body: a concurrent /health waits it out.
    stream = asyncio.create_task(_stream_arrivals(f"{server.url}/stream/blocking?chunks=5&ms=100"))
    await asyncio.sleep(0.1)
    async with httpx.AsyncClient(timeout=10) as client:
        start = time.perf_counter()
        await client.get(f"{server.url}/health")
        health_s = time.perf_counter() - start
    assert len(await stream) == 5
    assert health_s >= 0.2
    stalls = await stalls_for(server.url, "/stream/blocking")
    assert any(s["function"] == "blocking_chunks" for s in stalls)


async def test_stream_total_time_is_bounded(server: Server) -> None:
    assert (await burst(f"{server.url}/stream/blocking?chunks=100&ms=1000", 1)).statuses == [422]


async def test_background_tasks_answer_first_and_only_blocking_one_hurts(server: Server) -> None:
    sync = await burst(f"{server.url}/background/sync?ms=300", 1)
    assert sync.elapsed < 0.25  # the response does not wait for the task
    await asyncio.sleep(0.4)
    blocking = await burst(f"{server.url}/background/blocking?ms=300", 1)
    assert blocking.elapsed < 0.25
    await asyncio.sleep(0.5)
    stalls = await stalls_for(server.url, "/background/blocking")
    assert stalls and stalls[0]["function"] == "blocking_task"
    assert await stalls_for(server.url, "/background/sync") == []


async def test_blocking_background_task_delays_the_canary(server: Server) -> None:
    slow = await canary_latency(server.url, f"{server.url}/background/blocking?ms=200", 3)
    fast = await canary_latency(server.url, f"{server.url}/background/sync?ms=200", 3)
    assert slow >= 5 * fast, (slow, fast)
