"""I/O wait: the same 'wait ``ms``' done five ways, only one of which freezes the server."""

import asyncio
import time
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from target_app.routes._params import Ms, thread_name

router = APIRouter(prefix="/io", tags=["io"])


@router.get("/async-sleep")
async def async_sleep(ms: Ms = 50) -> dict[str, Any]:
    """``async def`` + ``await asyncio.sleep``: the right way to wait on the event loop.

    Under load: the loop switches to other requests while this one waits, so N clients get
    close to N / (ms/1000) requests per second, limited only by CPU.
    """
    await asyncio.sleep(ms / 1000)
    return {"slept_ms": ms, "thread": thread_name()}


@router.get("/blocking-sleep")
async def blocking_sleep(ms: Ms = 50) -> dict[str, Any]:
    """``async def`` + ``time.sleep``: the bug. The call blocks the event loop itself.

    Under load: requests are served one at a time, at most 1 / (ms/1000) per second per process,
    and every other route — ``/health`` included — waits behind them.
    """
    time.sleep(ms / 1000)
    return {"slept_ms": ms, "thread": thread_name()}


@router.get("/threadpool-sleep")
def threadpool_sleep(ms: Ms = 50) -> dict[str, Any]:
    """``def`` + ``time.sleep``: FastAPI runs a ``def`` route in AnyIO's threadpool and awaits it.

    Under load: up to ``LOADLAB_THREAD_TOKENS`` (40) requests wait at once, so the ceiling is
    40 / (ms/1000) per second; beyond 40 clients requests queue for a thread. The loop stays free.
    """
    time.sleep(ms / 1000)
    return {"slept_ms": ms, "thread": thread_name()}


@router.get("/offload-sleep")
async def offload_sleep(ms: Ms = 50) -> dict[str, Any]:
    """``async def`` + ``await run_in_threadpool(time.sleep, …)``: offloading one blocking call.

    Under load: like ``/io/threadpool-sleep`` — the blocking part holds a worker thread, not the
    loop — while the rest of the handler stays ``async``.
    """
    where = await run_in_threadpool(_sleep_and_report, ms / 1000)
    return {"slept_ms": ms, "thread": where}


def _sleep_and_report(seconds: float) -> str:
    time.sleep(seconds)
    return thread_name()


def sync_helper_sleep(ms: int) -> str:
    """A plain ``def`` utility that blocks. Calling it from ``async def`` runs it on the loop."""
    time.sleep(ms / 1000)
    return thread_name()


@router.get("/helper-sleep")
async def helper_sleep(ms: Ms = 50) -> dict[str, Any]:
    """``async def`` calling a ``def`` helper: FastAPI offloads only what *it* calls.

    The source page's point: a utility function you call yourself is not sent to the threadpool,
    so this behaves exactly like ``/io/blocking-sleep`` — the loop freezes for ``ms``.
    """
    return {"slept_ms": ms, "thread": sync_helper_sleep(ms)}
