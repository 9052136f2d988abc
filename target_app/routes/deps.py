"""Dependencies follow the same rule as routes: ``def`` runs in the threadpool, ``async def`` on
the loop, and a chain of sub-dependencies may mix both freely."""

import asyncio
import queue
import time
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException

from target_app.resources import Resources, resources
from target_app.routes._params import Ms, thread_name

router = APIRouter(prefix="/deps", tags=["deps"])


async def async_wait(ms: Ms = 50) -> str:
    await asyncio.sleep(ms / 1000)
    return thread_name()


def blocking_wait(ms: Ms = 50) -> str:
    time.sleep(ms / 1000)
    return thread_name()


@router.get("/async")
async def deps_async(dep_thread: Annotated[str, Depends(async_wait)]) -> dict[str, Any]:
    """An ``async def`` dependency that awaits: runs on the loop, blocks nothing."""
    return {"dependency_thread": dep_thread, "handler_thread": thread_name()}


@router.get("/sync")
async def deps_sync(dep_thread: Annotated[str, Depends(blocking_wait)]) -> dict[str, Any]:
    """A ``def`` dependency that blocks with ``time.sleep``: FastAPI runs it in the threadpool,
    so the ``async def`` handler and the loop are not held up. Ceiling: 40 / (ms/1000) per second.
    """
    return {"dependency_thread": dep_thread, "handler_thread": thread_name()}


def _step(name: str, kind: str) -> dict[str, str]:
    return {"dependency": name, "kind": kind, "thread": thread_name()}


async def read_token() -> list[dict[str, str]]:
    return [_step("read_token", "async def")]


def load_user(chain: Annotated[list[dict[str, str]], Depends(read_token)]) -> list[dict[str, str]]:
    return [*chain, _step("load_user", "def")]


async def check_permissions(
    chain: Annotated[list[dict[str, str]], Depends(load_user)],
) -> list[dict[str, str]]:
    return [*chain, _step("check_permissions", "async def")]


def write_audit(
    chain: Annotated[list[dict[str, str]], Depends(check_permissions)], ms: Ms = 50
) -> list[dict[str, str]]:
    time.sleep(ms / 1000)
    return [*chain, _step("write_audit", "def")]


@router.get("/mixed")
async def deps_mixed(chain: Annotated[list[dict[str, str]], Depends(write_audit)]) -> dict[str, Any]:
    """A chain ``async def`` → ``def`` → ``async def`` → ``def`` (which blocks ``ms``).

    The response lists the thread each step ran on: every ``def`` in a worker thread, every
    ``async def`` on the loop (``MainThread``). Mixing is safe; only the blocking ``def`` costs
    a thread.
    """
    return {"chain": chain, "handler_thread": thread_name()}


def pooled_resource(res: Annotated[Resources, Depends(resources)]) -> Iterator[int]:
    """A ``def`` dependency with ``yield`` that holds one of ``LOADLAB_POOL_SIZE`` resources
    (think: database connections) for the whole request."""
    timeout_s = res.settings.pool_timeout_ms / 1000
    try:
        item = res.resource_pool.get(timeout=timeout_s)
    except queue.Empty:
        raise HTTPException(
            status_code=503,
            detail=f"resource pool exhausted: no resource free within {res.settings.pool_timeout_ms} ms",
        ) from None
    try:
        yield item
    finally:
        res.resource_pool.put(item)


@router.get("/pool")
def deps_pool(resource: Annotated[int, Depends(pooled_resource)], ms: Ms = 50) -> dict[str, Any]:
    """Holds a pooled resource for ``ms``. The pool (4) is smaller than the threadpool (40):
    past 4 concurrent requests the rest wait *inside worker threads* for a resource, and past
    ``LOADLAB_POOL_TIMEOUT_MS`` they get a 503 instead of hanging. Ceiling: 4 / (ms/1000) per second.
    """
    time.sleep(ms / 1000)
    return {"resource": resource, "held_ms": ms, "thread": thread_name()}
