"""What the lifespan builds once and the routes share: pools, clients, the database and the file."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import queue
import sqlite3
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import Request

from target_app.settings import Settings
from target_app.work import burn_cpu

DB_ROWS = 20_000
FILE_BYTES = 8 * 1024 * 1024


@dataclass
class Resources:
    settings: Settings
    process_pool: ProcessPoolExecutor
    resource_pool: queue.Queue[int]
    sync_http: httpx.Client
    async_http: httpx.AsyncClient
    db_path: Path
    file_path: Path

    async def aclose(self) -> None:
        await self.async_http.aclose()
        self.sync_http.close()
        # wait=True: a uvicorn or gunicorn worker process leaves by os._exit, skipping the atexit
        # hook that would join the pool, so its children would be orphaned if not waited for here.
        await asyncio.to_thread(self.process_pool.shutdown, wait=True, cancel_futures=True)


async def resources(request: Request) -> Resources:
    """The app's shared resources (set by the lifespan). ``async`` so that depending on it never
    costs a threadpool hop."""
    res: Resources = request.app.state.resources
    return res


def seed_database(path: Path, rows: int = DB_ROWS) -> None:
    """Create the SQLite file with ``rows`` deterministic items, unless it is already there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS items ("
            "id INTEGER PRIMARY KEY, category INTEGER NOT NULL, value INTEGER NOT NULL, name TEXT NOT NULL)"
        )
        db.execute("CREATE INDEX IF NOT EXISTS items_category ON items(category)")
        (count,) = db.execute("SELECT count(*) FROM items").fetchone()
        if count != rows:
            db.execute("DELETE FROM items")
            db.executemany(
                "INSERT INTO items VALUES (?, ?, ?, ?)",
                ((i, i % 50, (i * 7919) % 1000, f"item-{i:05d}") for i in range(1, rows + 1)),
            )


def generate_file(path: Path, size: int = FILE_BYTES) -> None:
    """Write ``size`` bytes of deterministic data to ``path``, unless it already has that size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size == size:
        return
    block = bytes(range(256)) * 4096  # 1 MiB
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        for _ in range(size // len(block)):
            f.write(block)
        f.write(block[: size % len(block)])
    os.replace(tmp, path)


async def open_resources(settings: Settings) -> Resources:
    await asyncio.to_thread(seed_database, settings.db_path)
    file_path = settings.data_dir / "blob.bin"
    await asyncio.to_thread(generate_file, file_path)
    # spawn, not fork: the server process already runs threads (AnyIO workers, the watchdog).
    pool = ProcessPoolExecutor(settings.process_workers, mp_context=multiprocessing.get_context("spawn"))
    loop = asyncio.get_running_loop()
    # Start every child now, so the first requests measure the work and not a process start.
    await asyncio.gather(*(loop.run_in_executor(pool, burn_cpu, 0) for _ in range(settings.process_workers)))
    resource_pool: queue.Queue[int] = queue.Queue()
    for i in range(settings.pool_size):
        resource_pool.put(i)
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    return Resources(
        settings=settings,
        process_pool=pool,
        resource_pool=resource_pool,
        sync_http=httpx.Client(limits=limits),
        async_http=httpx.AsyncClient(limits=limits),
        db_path=settings.db_path,
        file_path=file_path,
    )
