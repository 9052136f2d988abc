"""Calls to a slow upstream HTTP service (``target_app.upstream``), three ways.

When the upstream is down the routes answer 502 at once; when it is slower than ``ms`` plus
``LOADLAB_UPSTREAM_TIMEOUT_S`` they answer 504. Neither hangs.
"""

from typing import Any

import httpx
from fastapi import APIRouter, Depends, HTTPException

from target_app.resources import Resources, resources
from target_app.routes._params import Ms, thread_name

router = APIRouter(prefix="/upstream", tags=["upstream"])


def _request(res: Resources, ms: int) -> tuple[str, dict[str, Any], httpx.Timeout]:
    timeout = httpx.Timeout(ms / 1000 + res.settings.upstream_timeout_s, connect=1.0)
    return f"{res.settings.upstream_url}/delay", {"ms": ms}, timeout


def _check(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise HTTPException(502, f"upstream answered {response.status_code}")
    data: dict[str, Any] = response.json()
    return data


def _upstream_error(exc: httpx.HTTPError) -> HTTPException:
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return HTTPException(504, f"upstream timed out: {type(exc).__name__}")
    return HTTPException(502, f"upstream unreachable: {type(exc).__name__}: {exc}")


def call_upstream_sync(res: Resources, ms: int) -> dict[str, Any]:
    url, params, timeout = _request(res, ms)
    try:
        return _check(res.sync_http.get(url, params=params, timeout=timeout))
    except httpx.HTTPError as exc:
        raise _upstream_error(exc) from exc


@router.get("/blocking")
async def upstream_blocking(ms: Ms = 50, res: Resources = Depends(resources)) -> dict[str, Any]:
    """A sync HTTP client (``httpx.Client``, like ``requests``) inside ``async def``: the loop
    waits on the socket and serves nothing else meanwhile."""
    return {"upstream": call_upstream_sync(res, ms), "thread": thread_name()}


@router.get("/threadpool")
def upstream_threadpool(ms: Ms = 50, res: Resources = Depends(resources)) -> dict[str, Any]:
    """The same sync client inside ``def``: each call holds a worker thread while it waits.
    Ceiling: 40 / (ms/1000) per second."""
    return {"upstream": call_upstream_sync(res, ms), "thread": thread_name()}


@router.get("/async")
async def upstream_async(ms: Ms = 50, res: Resources = Depends(resources)) -> dict[str, Any]:
    """One shared ``httpx.AsyncClient`` from the lifespan: thousands of calls can wait at once."""
    url, params, timeout = _request(res, ms)
    try:
        response = await res.async_http.get(url, params=params, timeout=timeout)
    except httpx.HTTPError as exc:
        raise _upstream_error(exc) from exc
    return {"upstream": _check(response), "thread": thread_name()}
