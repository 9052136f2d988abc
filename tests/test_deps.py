"""Dependencies: ``def`` ones run in the threadpool, ``async def`` ones on the loop."""

from tests.conftest import Server, burst, canary_latency


async def test_mixed_chain_runs_each_kind_where_fastapi_says(server: Server) -> None:
    result = await burst(f"{server.url}/deps/mixed?ms=5", 1)
    chain = result.responses[0].json()["chain"]
    assert [step["dependency"] for step in chain] == [
        "read_token",
        "load_user",
        "check_permissions",
        "write_audit",
    ]
    for step in chain:
        on_loop = step["thread"] == "MainThread"
        assert on_loop == (step["kind"] == "async def"), step


async def test_blocking_def_dependency_does_not_block_the_loop(server: Server) -> None:
    result = await burst(f"{server.url}/deps/sync?ms=100", 20)
    assert result.statuses == [200] * 20
    assert result.elapsed < 0.6  # 20 threads wait at once
    assert {r.json()["dependency_thread"] for r in result.responses} != {"MainThread"}
    healthy = await canary_latency(server.url, f"{server.url}/deps/async?ms=100", 10)
    offloaded = await canary_latency(server.url, f"{server.url}/deps/sync?ms=100", 10)
    assert offloaded < max(0.1, 10 * healthy)


async def test_pool_smaller_than_threadpool_queues_then_answers_503(small_server: Server) -> None:
    # Pool of 2, 200 ms acquisition timeout: of 6 requests holding it 600 ms, 2 get it, 4 give up.
    result = await burst(f"{small_server.url}/deps/pool?ms=600", 6)
    assert sorted(result.statuses) == [200, 200, 503, 503, 503, 503]
    assert result.elapsed < 3.0
    rejected = [r for r in result.responses if r.status_code == 503]
    assert "pool exhausted" in rejected[0].json()["detail"]
    # Once released, the pool serves again.
    assert (await burst(f"{small_server.url}/deps/pool?ms=10", 2)).statuses == [200, 200]
