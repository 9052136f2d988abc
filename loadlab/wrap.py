"""``uvicorn --factory loadlab.wrap:create_app``: the user's app, instrumented, unchanged.

The harness sets ``LOADLAB_WRAP_APP`` (``module:attr``, imported the way uvicorn imports it, with
the current directory on the path) and ``LOADLAB_WRAP_FACTORY=1`` if it is a factory. An app that
is already instrumented (the target app) is served as it is; any other app gets the debug routes
under ``/__loadlab__``, a prefix that cannot clash with its own.
"""

from __future__ import annotations

import os
from typing import Any

from uvicorn.importer import import_from_string

from loadlab.instrument import DEFAULT_STALL_MS, InstrumentedApp, instrument
from loadlab.offload import install_from_env

USER_APP_PREFIX = "/__loadlab__"


def create_app() -> Any:
    spec = os.environ.get("LOADLAB_WRAP_APP")
    if not spec:
        raise RuntimeError("LOADLAB_WRAP_APP is not set: it names the app to wrap, as module:attr")
    install_from_env()  # `loadlab whatif`: the fix is made in memory as the app's modules are imported
    app = import_from_string(spec)
    if os.environ.get("LOADLAB_WRAP_FACTORY") == "1":
        app = app()
    if not callable(app):
        # Served as it is, every request would fail with a 500 and the run would measure that.
        raise TypeError(f"--app {spec} is not an ASGI app: it is a {type(app).__name__}, not a callable")
    if isinstance(app, InstrumentedApp):
        return app
    stall_ms = float(os.environ.get("LOADLAB_STALL_MS") or DEFAULT_STALL_MS)
    return instrument(app, stall_ms=stall_ms, prefix=USER_APP_PREFIX)
