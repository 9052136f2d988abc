"""The target app's settings: one frozen object, read from ``LOADLAB_*`` env vars, validated once."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_DATA_DIR = Path(".data")


class SettingsError(ValueError):
    """A setting has a value the app cannot use; the message names the variable and what it takes."""


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer from {lo} to {hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be an integer from {lo} to {hi}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, lo: float, hi: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number from {lo:g} to {hi:g}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name} must be a number from {lo:g} to {hi:g}, got {value:g}")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name) or default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an http:// or https:// URL with a host, got {raw!r}")
    return raw.rstrip("/")


@dataclass(frozen=True)
class Settings:
    """Everything the target app can be tuned with. Build it with :meth:`from_env`."""

    thread_tokens: int = 40
    """AnyIO's default limiter size: how many ``def`` routes/dependencies run at once."""
    process_workers: int = 2
    """Size of the process pool behind ``/cpu/process``."""
    upstream_url: str = "http://127.0.0.1:8001"
    """Base URL of the slow upstream stub (``python -m target_app.upstream``)."""
    upstream_timeout_s: float = 2.0
    """Extra time granted to the upstream beyond the ``ms`` asked for, before answering 504."""
    db_path: Path = DEFAULT_DATA_DIR / "target_app.sqlite3"
    data_dir: Path = DEFAULT_DATA_DIR
    """Where the generated file for ``/files/*`` lives."""
    stall_ms: float = 100.0
    """The stall watchdog records the event loop blocked for longer than this."""
    pool_size: int = 4
    """Resources in the pool behind ``/deps/pool`` (keep it below ``thread_tokens``)."""
    pool_timeout_ms: int = 1000
    """How long ``/deps/pool`` waits for a resource before answering 503."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        data_dir = Path(env.get("LOADLAB_DATA_DIR") or DEFAULT_DATA_DIR)
        return cls(
            thread_tokens=_int(env, "LOADLAB_THREAD_TOKENS", 40, 1, 10_000),
            process_workers=_int(env, "LOADLAB_PROCESS_WORKERS", min(os.cpu_count() or 2, 8), 1, 64),
            upstream_url=_url(env, "LOADLAB_UPSTREAM_URL", "http://127.0.0.1:8001"),
            upstream_timeout_s=_float(env, "LOADLAB_UPSTREAM_TIMEOUT_S", 2.0, 0.1, 60.0),
            db_path=Path(env.get("LOADLAB_DB_PATH") or data_dir / "target_app.sqlite3"),
            data_dir=data_dir,
            stall_ms=_float(env, "LOADLAB_STALL_MS", 100.0, 1.0, 60_000.0),
            pool_size=_int(env, "LOADLAB_POOL_SIZE", 4, 1, 1000),
            pool_timeout_ms=_int(env, "LOADLAB_POOL_TIMEOUT_MS", 1000, 1, 60_000),
        )
