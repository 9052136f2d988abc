"""Which app the scenarios load: Locust's ``--host``/``-H`` wins, then ``LOADLAB_HOST``."""

from __future__ import annotations

import os
from typing import Any

DEFAULT_HOST = "http://127.0.0.1:8000"


def default_host() -> str:
    """``LOADLAB_HOST`` or http://127.0.0.1:8000 (what ``make serve`` listens on)."""
    return (os.environ.get("LOADLAB_HOST") or DEFAULT_HOST).rstrip("/")


def host_of(environment: Any) -> str:
    """The base URL the run targets, as Locust resolves it for its users."""
    host = getattr(environment, "host", None)
    if host:
        return str(host).rstrip("/")
    for user_class in getattr(environment, "user_classes", None) or []:
        if getattr(user_class, "host", None):
            return str(user_class.host).rstrip("/")
    return default_host()
