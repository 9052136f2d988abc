"""A Starlette app: ``loadlab profile --app app:app --locustfile locustfile.py``.

``/blocking`` calls ``time.sleep`` in an ``async def`` endpoint (holds the loop), ``/fixed`` awaits
``asyncio.sleep``, ``/sync`` is a ``def`` endpoint Starlette runs in AnyIO's worker threads.
"""

import asyncio
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def blocking(request: Request) -> JSONResponse:
    time.sleep(0.01)  # the mistake: a blocking call in an async endpoint
    return JSONResponse({"slept_ms": 10})


async def fixed(request: Request) -> JSONResponse:
    await asyncio.sleep(0.01)
    return JSONResponse({"slept_ms": 10})


def sync_report(request: Request) -> JSONResponse:
    time.sleep(0.02)  # fine here: Starlette runs a def endpoint in a worker thread
    return JSONResponse({"slept_ms": 20})


app = Starlette(
    routes=[
        Route("/blocking", blocking),
        Route("/fixed", fixed),
        Route("/sync", sync_report),
    ]
)
