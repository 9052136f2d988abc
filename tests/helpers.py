"""Helpers the tests share: run the CLI as a user would, read what a run wrote, check that no
process it started is left, and drive Debian's Chromium."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("LOADLAB_CHROMIUM", "/usr/bin/chromium")  # Debian's package; CI may point elsewhere
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def loadlab(
    *args: str, cwd: Path = REPO, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m loadlab ARGS`` to the end, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "loadlab", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def start(args: list[str], cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``loadlab profile ARGS`` in the background, to signal or kill it on the way."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadlab", "profile", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """Wait for a background run (killed if it overstays); return its stderr."""
    try:
        _, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return stderr


def run_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / "run.json").read_text())
    return data


def wait_for(out: Path, predicate: Any, timeout: float = 60) -> dict[str, Any]:
    """Poll a run's ``run.json`` until ``predicate`` holds for it; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = run_json(out)
            if predicate(data):
                return data
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.1)
    pytest.fail(f"run never reached the expected state; last: {out / 'run.json'}")


def assert_all_stopped(pids: dict[str, int | None]) -> None:
    for role, pid in pids.items():
        if pid is None:
            continue
        alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        assert not alive, f"{role} (pid {pid}) is still running"


def kill_mid_load(role: str, args: list[str], out: Path) -> tuple[int, str, dict[str, Any]]:
    """Start ``loadlab profile ARGS --out OUT``, SIGKILL its ``role`` child (``server``,
    ``profiler``) two seconds into the load, and return the exit code, stderr and run.json."""
    proc = start([*args, "--out", str(out)])
    # (py-spy attaches on demand: at a def route's first thread, known by the next second)
    data = wait_for(out, lambda d: d["phase"] == "load" and len(d["timeseries"]) >= 2 and role in d["pids"])
    pid = data["pids"][role]
    os.kill(pid, signal.SIGKILL)
    # The run must end within its load's duration even if the harness only notices at the end.
    stderr = finish(proc, timeout=90)
    if proc.returncode != 1:  # say what the killed process was doing, should this ever recur
        with contextlib.suppress(psutil.Error):
            stderr += f"\n[{role} {pid} after SIGKILL: {psutil.Process(pid).status()}]"
    return proc.returncode, stderr, run_json(out)


TINY_APP = """
import time

from fastapi import FastAPI

app = FastAPI()


def slow_lookup(key: str) -> str:
    time.sleep(0.02)  # a blocking call, in an async handler below
    return key.upper()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"ok": "yes"}


@app.get("/items/{key}")
async def item(key: str) -> dict[str, str]:
    return {"key": slow_lookup(key)}
"""

TINY_LOCUSTFILE = """
from locust import FastHttpUser, task


class Shopper(FastHttpUser):
    @task
    def item(self):
        self.client.get("/items/abc", name="/items/{key}")
"""


def tiny_blocking_app(folder: Path) -> Path:
    """A user's one-file FastAPI app (``shopapp:app``) whose async handler calls a blocking
    ``slow_lookup``, with its locustfile ``shopper.py``, written into ``folder``."""
    folder.mkdir()
    (folder / "shopapp.py").write_text(textwrap.dedent(TINY_APP))
    (folder / "shopper.py").write_text(textwrap.dedent(TINY_LOCUSTFILE))
    return folder
