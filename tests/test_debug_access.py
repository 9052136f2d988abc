"""Who may read the debug endpoints, and what ``/debug/loop`` does with a bad ``window_s``.

In-process through ``httpx.ASGITransport``, whose ``client=`` sets the ASGI scope's client address.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from loadlab.instrument import InstrumentedApp, instrument
from target_app.main import create_app

REMOTE = ("203.0.113.9", 1234)  # TEST-NET-3: never this machine
DEBUG_PATHS = ("/metrics", "/debug/loop", "/debug/stalls", "/debug/routes")
SECRETS = ("lag_ms", "stalls", "routes", "loadlab_", "pid", __file__)


def _user_app() -> InstrumentedApp:
    app = FastAPI()

    @app.get("/hello")
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    return instrument(app, prefix="/__loadlab__")


def _target_app() -> InstrumentedApp:
    return create_app()  # no lifespan through ASGITransport: no database, no process pool


# (builder, debug prefix, a route of the app itself)
APPS: dict[str, tuple[Callable[[], InstrumentedApp], str, str]] = {
    "user-app-under-prefix": (_user_app, "/__loadlab__", "/hello"),
    "target-app-no-prefix": (_target_app, "", "/health"),
}


@asynccontextmanager
async def _clients(app: InstrumentedApp, *clients: Any) -> AsyncIterator[list[httpx.AsyncClient]]:
    opened = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=c), base_url="http://test") for c in clients
    ]
    try:
        yield opened
    finally:
        for c in opened:
            await c.aclose()
        await app.instrumentation.stop()


def _strict_json(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity, as every non-Python JSON parser does."""

    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("which", APPS)
async def test_a_remote_client_gets_404_from_every_debug_route_and_the_app_still_answers_it(which: str) -> None:
    build, prefix, own_route = APPS[which]
    app = build()
    async with _clients(app, REMOTE) as (remote,):
        for path in DEBUG_PATHS:
            r = await remote.get(prefix + path, params={"window_s": "1"} if path == "/debug/loop" else None)
            assert r.status_code == 404, path
            assert r.json() == {"detail": "Not Found"}, path  # the app's own 404: nothing revealed
            assert not any(s in r.text for s in SECRETS), path
        assert (await remote.get(own_route)).status_code == 200


@pytest.mark.parametrize("which", APPS)
async def test_only_loopback_reads_the_debug_routes_by_default(which: str) -> None:
    build, prefix, _ = APPS[which]
    app = build()
    local = [("127.0.0.1", 5000), ("127.8.9.10", 5000), ("::1", 5000), ("::ffff:127.0.0.1", 5000), None]
    remote = [REMOTE, ("::ffff:203.0.113.9", 5000), ("2001:db8::1", 5000), ("testclient", 50000)]
    async with _clients(app, *local, *remote) as clients:
        for client, address in zip(clients, local + remote, strict=True):
            for path in DEBUG_PATHS:
                expected = 200 if address in local else 404
                assert (await client.get(prefix + path)).status_code == expected, (address, path)


async def test_a_scope_without_a_client_counts_as_local() -> None:
    app = _user_app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/__loadlab__/debug/loop", "query_string": b"", "headers": []}
    await app(scope, receive, send)
    await app.instrumentation.stop()
    assert sent[0]["status"] == 200
    # ...while the same request from a remote address is refused (so this test needs the change).
    sent.clear()
    await app(dict(scope, client=REMOTE), receive, send)
    await app.instrumentation.stop()
    assert sent[0]["status"] == 404


@pytest.mark.parametrize("which", APPS)
async def test_loadlab_debug_allow_lets_listed_networks_in(which: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOADLAB_DEBUG_ALLOW", " 10.0.0.0/8, 203.0.113.9/32 ,2001:db8::/32,")
    build, prefix, _ = APPS[which]
    app = build()
    allowed = [REMOTE, ("10.1.2.3", 1), ("2001:db8::7", 1), ("::ffff:10.1.2.3", 1), ("127.0.0.1", 1)]
    refused = [("203.0.113.10", 1), ("192.168.1.5", 1), ("2001:db9::1", 1)]
    async with _clients(app, *allowed, *refused) as clients:
        for client, address in zip(clients, allowed + refused, strict=True):
            for path in DEBUG_PATHS:
                expected = 200 if address in allowed else 404
                assert (await client.get(prefix + path)).status_code == expected, (address, path)


@pytest.mark.parametrize("which", APPS)
@pytest.mark.parametrize("value", ["10.0.0.0/33", "not-a-network", "10.0.0.5/8", "10.0.0.0/8;192.168.0.0/16", "*"])
def test_a_bad_loadlab_debug_allow_fails_at_start_naming_the_variable(
    which: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOADLAB_DEBUG_ALLOW", value)
    build, _, _ = APPS[which]
    with pytest.raises(ValueError) as caught:
        build()
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("LOADLAB_DEBUG_ALLOW must be")
    assert "CIDR" in message and "10.0.0.0/8" in message
    assert repr(value.split(",")[0].strip()) in message
    if value == "10.0.0.5/8":
        assert "did you mean 10.0.0.0/8?" in message


@pytest.mark.parametrize("which", APPS)
@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "1e999", "-1", "0", "abc"])
async def test_a_bad_window_s_is_a_400_with_valid_json(which: str, value: str) -> None:
    build, prefix, _ = APPS[which]
    app = build()
    async with _clients(app, ("127.0.0.1", 1)) as (client,):
        r = await client.get(f"{prefix}/debug/loop", params={"window_s": value})
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/json"
        assert "\n" not in r.text
        error = _strict_json(r.text)["error"]
        assert error.startswith("window_s must be a number of seconds > 0, e.g. 1")
        # Good values still work: a short window, and a long one capped to the probe's 10 s.
        ok = await client.get(f"{prefix}/debug/loop", params={"window_s": "1"})
        assert ok.status_code == 200 and _strict_json(ok.text)["lag_ms"]["window_s"] == 1.0
        capped = await client.get(f"{prefix}/debug/loop", params={"window_s": "1e9"})
        assert capped.status_code == 200 and _strict_json(capped.text)["lag_ms"]["window_s"] == 10.0
        assert (await client.get(f"{prefix}/debug/loop")).status_code == 200
