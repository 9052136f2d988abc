"""A Quart app: ``loadlab profile --app app:app --locustfile locustfile.py``.

``/blocking`` calls ``time.sleep`` in an ``async def`` view (holds the loop), ``/fixed`` awaits
``asyncio.sleep``, ``/sync`` is a ``def`` view: Quart wraps it in ``run_sync``, which runs it in the
event loop's default executor (threads named ``asyncio_N``).
"""

import asyncio
import time

from quart import Quart

app = Quart(__name__)


@app.get("/blocking")
async def blocking() -> dict[str, int]:
    time.sleep(0.01)  # the mistake: a blocking call in an async view
    return {"slept_ms": 10}


@app.get("/fixed")
async def fixed() -> dict[str, int]:
    await asyncio.sleep(0.01)
    return {"slept_ms": 10}


@app.get("/sync")
def sync_report() -> dict[str, int]:
    time.sleep(0.02)  # fine here: Quart runs a def view in the loop's executor
    return {"slept_ms": 20}
