"""Background tasks run after the response is sent — but still in this process, by the same rules."""

import time
from typing import Any

from fastapi import APIRouter, BackgroundTasks

from target_app.routes._params import Ms

router = APIRouter(prefix="/background", tags=["background"])


def sync_task(ms: int) -> None:
    time.sleep(ms / 1000)


async def blocking_task(ms: int) -> None:
    time.sleep(ms / 1000)


@router.get("/sync")
async def background_sync(tasks: BackgroundTasks, ms: Ms = 50) -> dict[str, Any]:
    """Schedules a ``def`` task that sleeps ``ms``: Starlette runs it in the threadpool after the
    response, so the client gets its answer at once and the loop stays free."""
    tasks.add_task(sync_task, ms)
    return {"scheduled_ms": ms, "task": "def"}


@router.get("/blocking")
async def background_blocking(tasks: BackgroundTasks, ms: Ms = 50) -> dict[str, Any]:
    """Schedules an ``async def`` task that calls ``time.sleep``: the client still gets its answer
    first, but then the task blocks the loop for ``ms`` and every other request waits."""
    tasks.add_task(blocking_task, ms)
    return {"scheduled_ms": ms, "task": "async def + time.sleep"}
