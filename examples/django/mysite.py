"""A one-file Django ASGI app: ``loadlab profile --app mysite:application --locustfile locustfile.py``.

- ``/blocking``: an ``async def`` view that calls ``time.sleep``: it holds the event loop.
- ``/fixed``: the same wait with ``await asyncio.sleep``: the loop serves others meanwhile.
- ``/sync``: a plain ``def`` view. Django runs it through asgiref's ``sync_to_async`` with
  ``thread_sensitive=True``: in a thread of its own per request (Django's ``ThreadSensitiveContext``),
  one request after another for the sync parts of that request.
"""

import asyncio
import time

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

settings.configure(
    DEBUG=False,
    SECRET_KEY="loadlab-example-not-secret",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    MIDDLEWARE=[],
)


async def blocking(request: HttpRequest) -> JsonResponse:
    time.sleep(0.01)  # the mistake: a blocking call in an async view
    return JsonResponse({"slept_ms": 10})


async def fixed(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0.01)
    return JsonResponse({"slept_ms": 10})


def sync_report(request: HttpRequest) -> JsonResponse:
    time.sleep(0.02)  # fine here: Django runs a def view in a thread
    return JsonResponse({"slept_ms": 20})


urlpatterns = [
    path("blocking", blocking),
    path("fixed", fixed),
    path("sync", sync_report),
]

application = get_asgi_application()
