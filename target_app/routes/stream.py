"""Streaming responses: the body generator follows the same rules as a handler."""

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import StreamingResponse

from target_app.routes._params import MAX_MS, Ms

router = APIRouter(prefix="/stream", tags=["stream"])

Chunks = Annotated[int, Query(ge=1, le=100, description="Chunks to send (1..100)")]


def _check_total(chunks: int, ms: int) -> None:
    if chunks * ms > MAX_MS:
        raise HTTPException(422, f"chunks × ms must be at most {MAX_MS} ms, got {chunks * ms}")


def _chunk(i: int) -> bytes:
    return f"chunk {i} at {time.time():.3f}\n".encode()


@router.get("/async")
async def stream_async(chunks: Chunks = 5, ms: Ms = 50) -> StreamingResponse:
    """An async generator awaiting ``asyncio.sleep`` between chunks: chunks arrive ``ms`` apart
    and the loop serves others in between."""
    _check_total(chunks, ms)

    async def body() -> AsyncIterator[bytes]:
        for i in range(chunks):
            await asyncio.sleep(ms / 1000)
            yield _chunk(i)

    return StreamingResponse(body(), media_type="text/plain")


@router.get("/sync")
def stream_sync(chunks: Chunks = 5, ms: Ms = 50) -> StreamingResponse:
    """A sync iterator with ``time.sleep``: Starlette pulls each chunk in the threadpool, one hop
    per chunk. The loop stays free; each stream holds a worker thread while it sleeps."""
    _check_total(chunks, ms)

    def body() -> Iterator[bytes]:
        for i in range(chunks):
            time.sleep(ms / 1000)
            yield _chunk(i)

    return StreamingResponse(body(), media_type="text/plain")


async def blocking_chunks(chunks: int, ms: int) -> AsyncIterator[bytes]:
    """An async generator that calls ``time.sleep``: it blocks the loop between chunks, so the
    server cannot flush what it has written — chunks arrive all at once, at the end."""
    for i in range(chunks):
        time.sleep(ms / 1000)
        yield _chunk(i)


@router.get("/blocking")
async def stream_blocking(chunks: Chunks = 5, ms: Ms = 50) -> StreamingResponse:
    """Streams :func:`blocking_chunks`: the bug, in a streaming body."""
    _check_total(chunks, ms)
    return StreamingResponse(blocking_chunks(chunks, ms), media_type="text/plain")
