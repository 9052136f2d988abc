"""A Litestar app: ``loadlab profile --app app:app --locustfile locustfile.py``.

``/blocking`` calls ``time.sleep`` in an ``async def`` handler (holds the loop), ``/fixed`` awaits
``asyncio.sleep``, ``/sync`` is a ``def`` handler with ``sync_to_thread=True``: on asyncio, Litestar 2
runs it with ``loop.run_in_executor`` in the loop's default executor (threads named ``asyncio_N``,
``uvloop_N`` under uvloop), not AnyIO's worker threads.
"""

import asyncio
import time

from litestar import Litestar, get


@get("/blocking")
async def blocking() -> dict[str, int]:
    time.sleep(0.01)  # the mistake: a blocking call in an async handler
    return {"slept_ms": 10}


@get("/fixed")
async def fixed() -> dict[str, int]:
    await asyncio.sleep(0.01)
    return {"slept_ms": 10}


@get("/sync", sync_to_thread=True)
def sync_report() -> dict[str, int]:
    time.sleep(0.02)  # fine here: sync_to_thread=True runs it in the loop's executor
    return {"slept_ms": 20}


app = Litestar(route_handlers=[blocking, fixed, sync_report])
