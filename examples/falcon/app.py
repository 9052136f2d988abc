"""A Falcon ASGI app: ``loadlab profile --app app:app --locustfile locustfile.py``.

Falcon's ASGI responders must be coroutines. ``/blocking`` calls ``time.sleep`` in one (holds the
loop), ``/fixed`` awaits ``asyncio.sleep``, ``/sync`` awaits a plain function through
``falcon.util.sync_to_async``, which runs it in the event loop's default executor (threads
named ``asyncio_N``).
"""

import asyncio
import time

import falcon.asgi
import falcon.util


class Blocking:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        time.sleep(0.01)  # the mistake: a blocking call in a coroutine responder
        resp.media = {"slept_ms": 10}


class Fixed:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await asyncio.sleep(0.01)
        resp.media = {"slept_ms": 10}


def sync_report(req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
    time.sleep(0.02)  # fine here: it runs in the loop's executor
    resp.media = {"slept_ms": 20}


class Sync:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        await falcon.util.sync_to_async(sync_report, req, resp)


app = falcon.asgi.App()
app.add_route("/blocking", Blocking())
app.add_route("/fixed", Fixed())
app.add_route("/sync", Sync())
