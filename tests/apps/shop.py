"""A small shop API, written the way services are: blockers in every place a request passes.

Nothing here was shaped for loadlab; each blocker is a mistake seen in real FastAPI services:

- ``RequestTimer``, a pure-ASGI middleware, writes an access line with a blocking ``time.sleep``
  standing in for a synchronous log shipper (~2 ms, waiting) — on every route.
- ``AuditMiddleware`` (``BaseHTTPMiddleware``) scores every request with pure-Python arithmetic
  (~2 ms, computing with the GIL held) — on every route.
- ``verify_token``, an ``async def`` dependency of ``/orders`` only, hashes the token with
  ``hashlib.pbkdf2_hmac`` (~6 ms of C that releases the GIL).
- ``db_session``, an ``async def`` dependency with ``yield`` of ``/cart`` only, opens a
  "connection" with a blocking ``time.sleep`` (~6 ms, waiting).
- ``/export`` builds its answer with ``json.dumps`` of a large document in three parts, inside a
  generator expression (~6 ms of C that holds the GIL).
- ``/signup`` queues an ``async def`` background task that sends a "mail" with ``time.sleep``
  (~6 ms, waiting) after the response.
- ``/health`` does nothing: the canary.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import BackgroundTasks, Depends, FastAPI, Header
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

CATALOG = [{"sku": f"SKU-{i:05d}", "name": f"item {i}", "tags": ["a", "b", "c"], "price": i * 1.5} for i in range(6000)]


class RequestTimer:
    """Pure ASGI middleware: times each request and ships an access line synchronously."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        start = time.perf_counter()
        await self.app(scope, receive, send)
        if scope["type"] == "http":
            time.sleep(0.002)  # the synchronous log shipper
            _ = time.perf_counter() - start


def risk_score(path: str) -> int:
    total = 0
    for i in range(36000):
        total += (i * len(path)) % 7
    return total


class AuditMiddleware(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Any) -> Response:
        request.state.risk = risk_score(request.url.path)
        response: Response = await call_next(request)
        return response


async def verify_token(authorization: str = Header(default="Bearer demo")) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", authorization.encode(), b"salt", 25000)
    return digest.hex()[:8]


async def db_session() -> AsyncIterator[dict[str, str]]:
    time.sleep(0.006)  # a synchronous driver's connect
    yield {"session": "s1"}


async def send_welcome_mail(address: str) -> None:
    time.sleep(0.006)  # a synchronous SMTP client


app = FastAPI()
app.add_middleware(AuditMiddleware)
app.add_middleware(RequestTimer)


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.get("/orders")
async def list_orders(user: str = Depends(verify_token)) -> dict[str, Any]:
    return {"user": user, "orders": []}


@app.get("/cart")
async def show_cart(db: dict[str, str] = Depends(db_session)) -> dict[str, Any]:
    return {"cart": [], "session": db["session"]}


@app.get("/export")
async def export_catalog() -> Response:
    body = "".join(json.dumps(CATALOG[i : i + 2000]) for i in range(0, len(CATALOG), 2000))
    return Response(content=str(len(body)), media_type="text/plain")


@app.post("/signup")
async def signup(background: BackgroundTasks) -> dict[str, bool]:
    background.add_task(send_welcome_mail, "new@example.com")
    return {"queued": True}
