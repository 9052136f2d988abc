"""The SQLite family: same query, same answer, three execution models."""

import pytest

from tests.conftest import Server, burst, canary_latency, stalls_for

ROWS = 1500  # ~120 ms of SQLite per query


async def test_all_variants_give_the_same_answer(server: Server) -> None:
    answers = set()
    for variant in ("blocking", "threadpool", "async"):
        body = (await burst(f"{server.url}/db/{variant}?rows=100", 1)).responses[0].json()
        answers.add((body["pairs"], body["checksum"]))
    assert len(answers) == 1
    assert answers.pop()[0] == 100 * 400  # each row joins the 400 items of its category


@pytest.mark.parametrize("offloaded", ["threadpool", "async"])
async def test_sync_driver_in_async_def_hurts_the_canary(server: Server, offloaded: str) -> None:
    good = await canary_latency(server.url, f"{server.url}/db/{offloaded}?rows={ROWS}", 6)
    bad = await canary_latency(server.url, f"{server.url}/db/blocking?rows={ROWS}", 6)
    assert bad >= 3 * good, (bad, good)


async def test_stall_watchdog_names_the_blocking_query(server: Server) -> None:
    await burst(f"{server.url}/db/blocking?rows=4000", 1)
    stalls = await stalls_for(server.url, "/db/blocking")
    assert stalls and stalls[0]["function"] in {"run_query", "db_blocking"}
    assert str(stalls[0]["file"]).endswith("target_app/routes/db.py")
