"""Route types to mix for the queueing model's checks (tests/test_mix_model.py): each holds one
station, so a mix of them has a bottleneck a reader can name beforehand.

- ``/sleepy``: ``async def`` with a blocking ``time.sleep`` of 8 ms: the event loop, waiting.
- ``/compute``: ``async def`` with ~6 ms of pure Python: the event loop, computing with the GIL.
- ``/reserve``: ``def`` (the threadpool) holding a module-wide lock for 12 ms: the lock.
- ``/remote``: ``async def`` awaiting 20 ms (a remote call with ample capacity): no station.
- ``/tiny``: ``async def`` doing nothing: the framework's own work, and Locust's.
"""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi import FastAPI

LOCK = threading.Lock()
app = FastAPI()


def crunch(n: int) -> int:
    total = 0
    for i in range(n):
        total += (i * 7) % 13
    return total


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/sleepy")
async def sleepy() -> dict[str, bool]:
    time.sleep(0.008)
    return {"ok": True}


@app.get("/compute")
async def compute() -> dict[str, int]:
    return {"total": crunch(60000)}


@app.get("/reserve")
def reserve() -> dict[str, bool]:
    with LOCK:
        time.sleep(0.012)
    return {"ok": True}


@app.get("/remote")
async def remote() -> dict[str, bool]:
    await asyncio.sleep(0.02)
    return {"ok": True}


@app.get("/tiny")
async def tiny() -> dict[str, bool]:
    return {"ok": True}
