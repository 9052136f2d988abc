"""The target app: ``target_app.main:app``, or ``create_app()`` for ``uvicorn --factory``.

The FastAPI app is wrapped by :func:`loadlab.instrument.instrument`, the same wrapper the harness
puts around a user's app, which adds ``/metrics``, ``/debug/loop`` and ``/debug/stalls``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from loadlab.instrument import InstrumentedApp, instrument
from target_app.resources import open_resources
from target_app.routes import background, cpu, db, deps, files, health, io, stream, trivial, upstream
from target_app.settings import Settings


def create_fastapi_app(settings: Settings) -> FastAPI:
    """The bare FastAPI app, without loadlab's instrumentation."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The limiter is per event loop, so it can only be sized once the loop runs.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.thread_tokens
        app.state.resources = await open_resources(settings)
        try:
            yield
        finally:
            await app.state.resources.aclose()

    app = FastAPI(
        title="loadlab target app",
        description="Twin routes for every concurrency pattern of FastAPI's 'Concurrency and "
        "async / await' page. Each route's description names its execution model.",
        lifespan=lifespan,
    )
    for module in (health, io, cpu, trivial, deps, db, upstream, files, stream, background):
        app.include_router(module.router)
    return app


def create_app(settings: Settings | None = None) -> InstrumentedApp:
    """The instrumented target app; settings come from ``LOADLAB_*`` env vars unless given."""
    settings = settings or Settings.from_env()
    return instrument(create_fastapi_app(settings), stall_ms=settings.stall_ms)


app = create_app()
