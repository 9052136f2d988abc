"""Fixtures: real uvicorn servers of the target app on free ports, and a way to load them.

Anything about concurrency is tested against a live server: only there do the event loop and
AnyIO's threadpool behave as in production. Servers are session-scoped (each costs ~2 s to start)
and every test reads only what it caused (stalls are filtered by route, timings are its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from loadlab.processes import LOOPBACK, free_port, upstream_stub, uvicorn_server


@dataclass(frozen=True)
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def target_app(data_dir: Path, upstream_url: str, **settings: str) -> Iterator[Server]:
    env = dict(os.environ)
    env.update(
        LOADLAB_DATA_DIR=str(data_dir),
        LOADLAB_UPSTREAM_URL=upstream_url,
        LOADLAB_PROCESS_WORKERS="2",
        **{f"LOADLAB_{k.upper()}": v for k, v in settings.items()},
    )
    with uvicorn_server("target_app.main:app", env=env, name="target app") as (proc, url):
        yield Server(url, proc.pid)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("target-data")


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    with upstream_stub() as (_, url):
        yield url


@pytest.fixture(scope="session")
def server(data_dir: Path, upstream: str) -> Iterator[Server]:
    """The target app with its defaults: 40 thread tokens, a 2-process pool, stalls ≥ 100 ms."""
    with target_app(data_dir, upstream) as srv:
        yield srv


@pytest.fixture(scope="session")
def black_hole() -> Iterator[str]:
    """A TCP port that accepts connections (the kernel does) but never answers: a hung upstream."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen(64)
        yield f"http://{LOOPBACK}:{sock.getsockname()[1]}"


@pytest.fixture(scope="session")
def small_server(data_dir: Path, black_hole: str) -> Iterator[Server]:
    """5 thread tokens, a pool of 2 with a 200 ms timeout, and an upstream that never answers."""
    with target_app(
        data_dir,
        black_hole,
        thread_tokens="5",
        pool_size="2",
        pool_timeout_ms="200",
        upstream_timeout_s="0.3",
    ) as srv:
        yield srv


@pytest.fixture(scope="session")
def dead_upstream_server(data_dir: Path) -> Iterator[Server]:
    """The target app pointed at an upstream port where nothing listens."""
    with target_app(data_dir, f"http://{LOOPBACK}:{free_port()}") as srv:
        yield srv


@dataclass
class Burst:
    elapsed: float
    responses: list[httpx.Response]

    @property
    def statuses(self) -> list[int]:
        return [r.status_code for r in self.responses]


async def burst(url: str, n: int, timeout: float = 60.0) -> Burst:
    """Send ``n`` requests to ``url`` at once, each on its own connection; time them all."""
    limits = httpx.Limits(max_connections=n + 5, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        start = time.perf_counter()
        responses = await asyncio.gather(*(client.get(url) for _ in range(n)))
        return Burst(time.perf_counter() - start, list(responses))


def parallel_speedup(iterations: int = 100_000) -> float:
    """How much faster this machine runs two computations at once than one after the other, now:
    2 × (one ``hashlib.pbkdf2_hmac``, which lets go of the GIL, alone) / (two at once, in two
    threads). Near 2 with two free cores; near 1 when something holds one of them, or when the VM's
    two vCPUs share one physical core at the moment (seen here: 1.1–2.0 from one second to the next
    on an idle machine, with no steal time to show for it)."""

    def work() -> None:
        hashlib.pbkdf2_hmac("sha256", b"loadlab", b"salt", iterations)

    def timed(n: int) -> float:
        threads = [threading.Thread(target=work) for _ in range(n)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start

    return 2 * timed(1) / timed(2)


async def canary_latency(base: str, load_url: str, n_load: int, probes: int = 3) -> float:
    """Median latency of ``/health`` while ``n_load`` requests to ``load_url`` are in flight."""
    limits = httpx.Limits(max_connections=n_load + 5, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        load = asyncio.gather(*(client.get(load_url) for _ in range(n_load)))
        await asyncio.sleep(0.05)  # let the load arrive first

        async def probe() -> float:
            start = time.perf_counter()
            assert (await client.get(f"{base}/health")).status_code == 200
            return time.perf_counter() - start

        samples = sorted(await asyncio.gather(*(probe() for _ in range(probes))))
        await load
    return samples[len(samples) // 2]


async def stalls_for(base: str, route: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        stalls = (await client.get(f"{base}/debug/stalls")).json()["stalls"]
    return [s for s in stalls if s["route"] == route]
