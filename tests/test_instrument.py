"""The instrumentation in-process: frame filtering, the ASGI wrapper and its debug endpoints."""

import asyncio
import os
import sys
import threading
import time

import httpx
from fastapi import FastAPI

from loadlab.instrument import (
    LoopLagProbe,
    StallWatchdog,
    application_frames,
    instrument,
    is_application_file,
)


def test_library_files_are_not_application_code() -> None:
    assert not is_application_file(asyncio.__file__)
    assert not is_application_file(httpx.__file__)
    assert not is_application_file("<frozen runpy>")
    assert not is_application_file(sys.modules["loadlab.instrument"].__file__ or "")
    assert is_application_file(__file__)


def test_application_frames_innermost_first() -> None:
    def inner() -> list[str]:
        return [f.function for f in application_frames(sys._getframe())]

    def outer() -> list[str]:
        return inner()

    names = outer()
    # Qualified names, as py-spy reports them: a nested function says where it is nested.
    test = "test_application_frames_innermost_first"
    assert names[:3] == [f"{test}.<locals>.inner", f"{test}.<locals>.outer", test]


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return app


async def test_wrapper_serves_debug_routes_under_a_prefix() -> None:
    wrapped = instrument(_app(), prefix="/__loadlab__")
    transport = httpx.ASGITransport(app=wrapped)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/hello")).json() == {"hello": "world"}
        loop = (await client.get("/__loadlab__/debug/loop")).json()
        assert loop["threadpool"]["total"] == 40
        assert set(loop["lag_ms"]) >= {"p50", "p99", "max"}
        assert (await client.get("/__loadlab__/debug/stalls")).json() == {"pid": os.getpid(), "stalls": []}
        metrics = (await client.get("/__loadlab__/metrics")).text
        assert "loadlab_loop_lag_seconds_bucket" in metrics
        assert "loadlab_threadpool_total_tokens 40.0" in metrics
        assert (await client.get("/debug/loop")).status_code == 404  # no prefix: the app's own 404
    await wrapped.instrumentation.stop()


async def test_watchdog_records_a_stall_with_its_culprit() -> None:
    probe = LoopLagProbe(interval=0.005)
    task = asyncio.create_task(probe.run())
    watchdog = StallWatchdog(probe, asyncio.get_running_loop(), threading.get_ident(), stall_ms=50)
    watchdog.start()
    try:
        await asyncio.sleep(0.05)

        def hog_the_loop() -> None:
            time.sleep(0.2)

        hog_the_loop()
        await asyncio.sleep(0.05)
    finally:
        watchdog.stop()
        task.cancel()
    assert watchdog.total == 1
    stall = watchdog.stalls[0]
    assert stall.function is not None and stall.function.endswith(".<locals>.hog_the_loop")
    assert 150 <= stall.duration_ms < 1000
    assert probe.snapshot()["max"] >= 150


async def test_a_stall_in_garbage_collection_is_named_as_such() -> None:
    import gc

    probe = LoopLagProbe(interval=0.005)
    task = asyncio.create_task(probe.run())
    watchdog = StallWatchdog(probe, asyncio.get_running_loop(), threading.get_ident(), stall_ms=50)
    watchdog.start()

    class Slow:
        # A finalizer that blocks makes the collection itself long, the way a huge heap would.
        def __del__(self) -> None:
            time.sleep(0.2)

    try:
        await asyncio.sleep(0.05)
        cycle: list[object] = [Slow()]
        cycle.append(cycle)
        del cycle
        gc.collect()
        await asyncio.sleep(0.05)
    finally:
        watchdog.stop()
        task.cancel()
    assert watchdog.total >= 1
    assert watchdog.stalls[0].function == "(garbage collection, generation 2)"
