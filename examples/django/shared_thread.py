"""asgiref's thread-sensitive trap, outside Django's request handler: a Starlette app whose ``def``
work goes through ``sync_to_async`` (``thread_sensitive=True``, the default, as for Django's ORM).
Without Django's per-request ``ThreadSensitiveContext`` every such call runs on asgiref's one shared
thread: they wait in line for it, one at a time, whatever the load.

``loadlab profile --app shared_thread:app --locustfile locustfile.py --tags sync``
"""

import asyncio
import time

from asgiref.sync import sync_to_async
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


def sync_report() -> int:
    time.sleep(0.02)  # stands for an ORM query
    return 20


async def report(request: Request) -> JSONResponse:
    return JSONResponse({"slept_ms": await sync_to_async(sync_report)()})  # one shared thread


app = Starlette(routes=[Route("/blocking", blocking), Route("/fixed", fixed), Route("/sync", report)])
