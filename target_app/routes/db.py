"""A real SQLite database, queried three ways. Each request opens its own connection, as a
per-request session would, and runs a join whose cost grows with ``rows`` (~0.08 ms per row)."""

import sqlite3
from pathlib import Path
from typing import Annotated, Any

import aiosqlite
from fastapi import APIRouter, Depends, Query

from target_app.resources import DB_ROWS, Resources, resources
from target_app.routes._params import thread_name

router = APIRouter(prefix="/db", tags=["db"])

Rows = Annotated[int, Query(ge=1, le=DB_ROWS, description=f"Outer rows to join (1..{DB_ROWS}), ~0.08 ms each")]

# Each outer row is joined with the 400 items of its category (indexed): cost is linear in rows.
QUERY = (
    "SELECT count(*), coalesce(sum((a.value * b.value) % 97), 0) "
    "FROM items a JOIN items b ON b.category = a.category WHERE a.id <= ?"
)


def run_query(path: Path, rows: int) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        pairs, checksum = db.execute(QUERY, (rows,)).fetchone()
    return int(pairs), int(checksum)


@router.get("/blocking")
async def db_blocking(rows: Rows = 500, res: Resources = Depends(resources)) -> dict[str, Any]:
    """The sync ``sqlite3`` driver inside ``async def``: the query runs on the loop and blocks it.

    Under load: one query at a time per process, and ``/health`` waits behind each one.
    """
    pairs, checksum = run_query(res.db_path, rows)
    return {"rows": rows, "pairs": pairs, "checksum": checksum, "thread": thread_name()}


@router.get("/threadpool")
def db_threadpool(rows: Rows = 500, res: Resources = Depends(resources)) -> dict[str, Any]:
    """The sync ``sqlite3`` driver inside ``def``: offloaded to the threadpool. SQLite releases the
    GIL while it works, so on 2 cores two queries really run at once."""
    pairs, checksum = run_query(res.db_path, rows)
    return {"rows": rows, "pairs": pairs, "checksum": checksum, "thread": thread_name()}


@router.get("/async")
async def db_async(rows: Rows = 500, res: Resources = Depends(resources)) -> dict[str, Any]:
    """``aiosqlite``: an async API whose connection runs SQLite in its own thread. The loop stays
    free; each connection costs a thread for its lifetime."""
    async with aiosqlite.connect(res.db_path) as db:
        async with db.execute(QUERY, (rows,)) as cursor:
            row = await cursor.fetchone()
    assert row is not None
    return {"rows": rows, "pairs": int(row[0]), "checksum": int(row[1]), "thread": thread_name()}
