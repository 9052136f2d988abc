"""Query parameters shared by the route families; every one that costs time is bounded."""

import threading
from typing import Annotated

from fastapi import Query

from target_app.work import MAX_WORK

MAX_MS = 10_000

Ms = Annotated[int, Query(ge=0, le=MAX_MS, description="Milliseconds to wait (0..10000)")]
Work = Annotated[int, Query(ge=0, le=MAX_WORK, description=f"Units of CPU work, ~1 ms each (0..{MAX_WORK})")]


def thread_name() -> str:
    """Where this code runs: ``MainThread`` is the event loop; AnyIO's workers have their own names."""
    return threading.current_thread().name
