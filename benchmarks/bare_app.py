"""The target app without loadlab's instrumentation, for ``uvicorn --factory``.

``benchmarks.bare_app:create_app`` serves the same routes as ``target_app.main:app`` but with no
loop-lag probe, threadpool gauge or stall watchdog: the baseline of the instrumentation overhead.
"""

from __future__ import annotations

from fastapi import FastAPI

from target_app.main import create_fastapi_app
from target_app.settings import Settings


def create_app() -> FastAPI:
    return create_fastapi_app(Settings.from_env())
