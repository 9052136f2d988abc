"""A small ledger API for ``loadlab whatif``: a blocking call in a dependency and one in middleware.

- ``db_session``, an ``async def`` dependency with ``yield``, opens a "connection" through the
  synchronous driver call ``fetch_rows`` (~20 ms, waiting); it closes it in ``finally``.
- ``audit``, an ``@app.middleware("http")`` function, ships an access line with the synchronous
  ``ship_log`` (~5 ms, waiting) after every response.
- ``/entries`` also calls ``fetch_rows`` where it cannot be offloaded: in a generator expression
  and in a lambda (both with 0 ms, so they cost nothing).
- ``/sorted`` calls ``render`` with a lambda argument: a process cannot take that.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends, FastAPI, Request, Response

app = FastAPI()


def fetch_rows(ms: float) -> list[int]:
    """The synchronous database driver's call."""
    time.sleep(ms / 1000)
    return [1, 2, 3]


def ship_log(line: str, ms: float = 5) -> None:
    """A synchronous log shipper."""
    time.sleep(ms / 1000)


def render(rows: list[int], key: Any) -> list[int]:
    return sorted(rows, key=key)


async def db_session() -> AsyncIterator[list[int]]:
    rows = fetch_rows(20)
    try:
        yield rows
    finally:
        fetch_rows(0)  # closing: in a finally block


@app.middleware("http")
async def audit(request: Request, call_next: Any) -> Response:
    response: Response = await call_next(request)
    ship_log(f"{request.method} {request.url.path} {response.status_code}")
    return response


@app.get("/entries")
async def entries(rows: list[int] = Depends(db_session)) -> dict[str, Any]:
    total = sum(len(fetch_rows(0)) for _ in range(2))
    first = sorted(rows, key=lambda r: len(fetch_rows(0)) * r)
    return {"rows": rows, "total": total, "first": first[0]}


@app.get("/sorted")
async def sorted_rows() -> list[int]:
    return render([3, 1, 2], key=lambda r: -r)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
