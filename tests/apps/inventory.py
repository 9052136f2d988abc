"""An inventory service whose trouble is in its threads, not in an obvious ``async def`` mistake.

- ``/reserve`` is ``def`` (so FastAPI runs it in the threadpool) and calls ``reserve_stock``, which
  holds a module-wide ``threading.Lock`` while it waits 20 ms on the "warehouse": the lock lets one
  request through at a time, so the route tops out near 50 req/s whatever the thread count.
- ``/report`` is ``def`` too and computes a summary in pure Python (~8 ms, the GIL held): while
  it runs, the event loop waits for the GIL.
- ``/quote`` is ``async def`` with ~2 ms of Python arithmetic on the loop: the part that starves.
- ``/lookup`` is ``async def`` and asks a stock service over a plain blocking socket (~3 ms).
- ``/health`` does nothing: the canary.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from typing import Any

from fastapi import FastAPI

STOCK_LOCK = threading.Lock()
_stock_service: dict[str, int] = {}


class _SlowEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data = self.request.recv(64)
        time.sleep(0.003)
        self.request.sendall(data)


def _start_stock_service() -> int:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SlowEcho)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="stock-service", daemon=True).start()
    return int(server.server_address[1])


def reserve_stock(sku: str) -> bool:
    with STOCK_LOCK:
        time.sleep(0.02)  # the warehouse's API, one reservation at a time
    return True


def summarise(n: int) -> int:
    total = 0
    for i in range(n):
        total += (i * i) % 11
    return total


def price_of(sku: str) -> int:
    price = 0
    for i in range(36000):
        price += (i * 7) % 13
    return price


def ask_stock_service(sku: str) -> bytes:
    port = _stock_service.get("port") or _stock_service.setdefault("port", _start_stock_service())
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(sku.encode())
        return conn.recv(64)


app = FastAPI()


@app.get("/health")
async def health() -> dict[str, bool]:
    return {"ok": True}


@app.post("/reserve")
def reserve() -> dict[str, bool]:
    return {"reserved": reserve_stock("SKU-1")}


@app.get("/report")
def report() -> dict[str, int]:
    return {"total": summarise(150000)}


@app.get("/quote")
async def quote() -> dict[str, Any]:
    return {"price": price_of("SKU-1")}


@app.get("/lookup")
async def lookup() -> dict[str, str]:
    return {"stock": ask_stock_service("SKU-1").decode()}
