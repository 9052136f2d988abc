"""CPU-bound work: the GIL serialises threads; a process pool runs in parallel."""

import os

import pytest

from tests.conftest import Burst, Server, burst, parallel_speedup, stalls_for

WORK = 100  # ~100 ms of one core per request
SPEEDUP_MIN = 1.5  # two computations at once against one after the other, below which a burst does not count


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="parallelism needs at least 2 cores")
async def test_process_pool_beats_threadpool_on_two_cores(server: Server) -> None:
    await burst(f"{server.url}/cpu/process?work=1", 4)  # warm both pool processes
    # The two kinds interleaved, best of each so far: one burst on 2 shared cores is at the mercy of
    # a neighbour, and one that runs through a whole phase would hit one kind only. A burst counts
    # only if the machine ran two computations at once at least SPEEDUP_MIN times as fast as one,
    # just before it and just after: CI read the pool at 0.83-0.92 s for a whole test, on an idle
    # machine whose two vCPUs then gave about one core's worth between them.
    bursts: dict[str, list[tuple[Burst, float]]] = {"threadpool": [], "process": []}
    clean: dict[str, list[float]] = {}
    speedups = [parallel_speedup()]  # one between each two bursts: the one after a burst is the next's before
    for _ in range(6):  # bounded: at most 6 bursts of each
        for kind in bursts:
            b = await burst(f"{server.url}/cpu/{kind}?work={WORK}", 8)
            assert b.statuses == [200] * 8
            speedups.append(parallel_speedup())
            bursts[kind].append((b, min(speedups[-2:])))
        clean = {kind: [b.elapsed for b, x in seen if x >= SPEEDUP_MIN] for kind, seen in bursts.items()}
        if len(bursts["process"]) >= 2 and all(clean.values()):
            if min(clean["process"]) < 0.8 * min(clean["threadpool"]):
                break
    seen = {kind: [(round(b.elapsed, 3), round(x, 2)) for b, x in got] for kind, got in bursts.items()}
    # Same work, same result.
    responses = [r for got in bursts.values() for b, _ in got for r in b.responses]
    assert {r.json()["checksum"] for r in responses} == {responses[0].json()["checksum"]}
    if not all(clean.values()):
        pytest.skip(f"the machine never had two cores' worth around a burst of a kind: (seconds, speed-up) {seen}")
    # On 2 cores the pool should take about half the time of the threads.
    assert min(clean["process"]) < 0.8 * min(clean["threadpool"]), f"(seconds, the machine's speed-up) {seen}"


async def test_cpu_in_async_def_blocks_the_loop_and_is_named(server: Server) -> None:
    await burst(f"{server.url}/cpu/async?work=250", 1)
    stalls = await stalls_for(server.url, "/cpu/async")
    assert stalls, "no stall recorded for /cpu/async"
    # The innermost application frame is the work function; the handler is in the stack.
    assert stalls[0]["function"] == "burn_cpu"
    assert str(stalls[0]["file"]).endswith("target_app/work.py")
    assert stalls[0]["kind"] == "cpu"  # the loop thread was computing, not waiting
    assert any("cpu_async" in frame for frame in stalls[0]["stack"])  # type: ignore[union-attr]


@pytest.mark.parametrize("query", ["work=-1", "work=1501", "work=1e9"])
async def test_out_of_range_work_is_rejected(server: Server, query: str) -> None:
    assert (await burst(f"{server.url}/cpu/async?{query}", 1)).statuses == [422]
