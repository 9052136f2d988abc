"""Reading a generated 8 MiB file in 64 KiB chunks, sync on the loop vs AnyIO's async file API.

From the page cache a read is fast, so the blocking variant costs little here; on a cold cache or
a network filesystem each read can block the loop for milliseconds. The async variant never blocks
the loop, but pays one threadpool hop per chunk — measure both before choosing.
"""

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query

from target_app.resources import FILE_BYTES, Resources, resources
from target_app.routes._params import thread_name

router = APIRouter(prefix="/files", tags=["files"])

CHUNK = 64 * 1024
Kb = Annotated[int, Query(ge=1, le=FILE_BYTES // 1024, description="KiB to read (1..8192)")]


@router.get("/blocking")
async def files_blocking(kb: Kb = 256, res: Resources = Depends(resources)) -> dict[str, Any]:
    """Sync ``open``/``read`` inside ``async def``: every read blocks the loop."""
    remaining, total = kb * 1024, 0
    with open(res.file_path, "rb") as f:
        while remaining > 0 and (chunk := f.read(min(CHUNK, remaining))):
            total += len(chunk)
            remaining -= len(chunk)
    return {"bytes": total, "thread": thread_name()}


@router.get("/async")
async def files_async(kb: Kb = 256, res: Resources = Depends(resources)) -> dict[str, Any]:
    """``anyio.open_file``: each read runs in a worker thread and is awaited; the loop stays free."""
    remaining, total = kb * 1024, 0
    async with await anyio.open_file(res.file_path, "rb") as f:
        while remaining > 0 and (chunk := await f.read(min(CHUNK, remaining))):
            total += len(chunk)
            remaining -= len(chunk)
    return {"bytes": total, "thread": thread_name()}
