"""A slow upstream service for the ``/upstream/*`` routes: answers ``/delay?ms=`` after ``ms``.

Run as its own process (``python -m uvicorn target_app.upstream:app --port 8001``), so the target
app's HTTP calls cross a real socket. It waits with ``asyncio.sleep``, so it can hold thousands of
slow requests at once and never becomes the bottleneck itself.
"""

import asyncio
from typing import Annotated

from fastapi import FastAPI, Query

app = FastAPI(title="loadlab upstream stub")


@app.get("/delay")
async def delay(ms: Annotated[int, Query(ge=0, le=60_000)] = 50) -> dict[str, int]:
    """Answer after ``ms`` milliseconds."""
    await asyncio.sleep(ms / 1000)
    return {"delayed_ms": ms}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
