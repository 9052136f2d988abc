"""What the harness measures around a load test, apart from the profile: the canary's idle
latency, each endpoint's service time on the idle server, the CPU and memory of the process trees,
and Locust's live figures. Each is a small function over an HTTP client or a file; the runner
decides when they run."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadlab.instrument import percentile
from loadlab.results import AGGREGATED, read_locust_stats

CANARY_IDLE_SAMPLES = 20
SERVICE_PROBES = 5
SERVICE_PROBE_TIMEOUT_S = 15.0
QUIET_TIMEOUT_S = 3.0
SCENARIO_PARAMETERS = ("ms", "work", "rows", "kb", "chunks")  # loadtests/common.py's, by env var


def canary_idle(client: httpx.Client, url: str) -> dict[str, float]:
    """The canary's latency on the idle server, before any load: the baseline of its damage."""
    times = []
    for _ in range(CANARY_IDLE_SAMPLES):
        start = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p95_ms": round(percentile(times, 0.95), 3),
        "samples": len(times),
    }


def live_stats(csv_prefix: Path) -> tuple[float, int] | None:
    """The latest requests/s and failure count from Locust's stats history, if written yet."""
    path = Path(f"{csv_prefix}_stats_history.csv")
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == AGGREGATED]
        if rows:
            return float(rows[-1]["Requests/s"]), int(rows[-1]["Total Failure Count"])
    return None


class ProcessMeter:
    """CPU and memory of process trees (a server with its workers and pool children; Locust): CPU
    in percent of one core since the last reading — to tell when the CPU, not the model, was the
    limit — and resident memory, with the harness's own, for the soak test."""

    def __init__(self, roots: dict[str, int | None], alone: dict[str, Callable[[], list[int]]] | None = None) -> None:
        self._roots = {k: v for k, v in roots.items() if v}
        self._alone = alone or {}  # processes measured without their children (py-spy: its child is the server)
        self._procs: dict[int, psutil.Process] = {}

    def _cpu(self, proc: psutil.Process) -> float:
        cached = self._procs.setdefault(proc.pid, proc)
        return float(cached.cpu_percent(None))

    def read(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, pid in self._roots.items():
            cpu, rss = 0.0, 0
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(pid)
                for proc in [root, *root.children(recursive=True)]:
                    cached = self._procs.setdefault(proc.pid, proc)
                    with contextlib.suppress(psutil.Error):
                        cpu += cached.cpu_percent(None)
                        rss += cached.memory_info().rss
            out[f"{key}_cpu_percent"] = round(cpu, 1)
            out[f"{key}_rss_mb"] = round(rss / 2**20, 1)
        for key, pids in self._alone.items():
            cpu = 0.0
            for pid in pids():
                with contextlib.suppress(psutil.Error):
                    cpu += self._cpu(psutil.Process(pid))
            out[f"{key}_cpu_percent"] = round(cpu, 1)
        out["harness_rss_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
        # The whole machine, in percent of one core like the rest: what other processes (py-spy,
        # other users' work) took from the cores the server and Locust share.
        out["machine_cpu_percent"] = round(psutil.cpu_percent(None) * (psutil.cpu_count() or 1), 1)
        return out


IDLE_CPU_S = 0.5


def idle_cpu(pid: int | None) -> float | None:
    """The server's CPU, in percent of one core, while it serves nothing: its instrumentation's
    and the profiler's own cost, which no request should be charged for."""
    if not pid:
        return None
    meter = ProcessMeter({"server": pid})
    meter.read()
    time.sleep(IDLE_CPU_S)
    return meter.read().get("server_cpu_percent")


def wait_quiet(client: httpx.Client, debug_url: str | None, timeout: float = QUIET_TIMEOUT_S) -> None:
    """Wait (bounded) until no request is in flight: Locust is gone, but work it started (a thread
    still sleeping, a queued CPU call) may not be, and the probe must not queue behind it."""
    if debug_url is None:
        time.sleep(0.5)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            if client.get(debug_url, timeout=1.0).json()["inflight"]["total"] == 0:
                return
        time.sleep(0.05)


def probe_service_times(client: httpx.Client, base: str, csv_prefix: Path) -> dict[str, float]:
    """Each GET endpoint's service time, measured on the now idle server: the median of a few
    sequential requests (Little's law needs the time of a request that did not queue). Only rows
    whose name is a plain path are probed; the theory falls back to Locust's fastest response."""
    out: dict[str, float] = {}
    # The demo scenarios' parameters, when set, go along (routes ignore those they do not take),
    # so the probe asks for the same work as Locust did; unset, both use the same defaults.
    params = {k: v for k in SCENARIO_PARAMETERS if (v := os.environ.get(f"LOADLAB_{k.upper()}"))}
    for row in read_locust_stats(csv_prefix):
        name = row["name"]
        if row["method"] != "GET" or not re.fullmatch(r"/[\w\-./]*", name):
            continue
        times = []
        with contextlib.suppress(httpx.HTTPError):
            for _ in range(SERVICE_PROBES):
                start = time.perf_counter()
                client.get(base + name, params=params, timeout=SERVICE_PROBE_TIMEOUT_S)
                times.append((time.perf_counter() - start) * 1000)
        if len(times) == SERVICE_PROBES:
            out[name] = round(statistics.median(times), 3)
    return out


def sample_counts(snapshot: dict[str, Any]) -> dict[tuple[Any, ...], list[int]]:
    return {
        (s["function"], s["file"], s["line"], s["route"]): [s["cpu"], s["wait"], s["gil"], s.get("cpu_gil_free", 0)]
        for s in snapshot.get("samples", [])
    }


def samples_since(before: dict[str, Any] | None, now: dict[str, Any]) -> dict[str, Any]:
    """The loop sampler's record since ``before`` (a test's start, or the moment py-spy attached):
    the counts now minus the counts then."""
    if not before:
        return now
    old = sample_counts(before)
    samples = []
    for key, counts in sample_counts(now).items():
        diff = [a - b for a, b in zip(counts, old.get(key, [0, 0, 0, 0]), strict=True)]
        if any(diff):
            function, file, line, route = key
            samples.append(
                {"function": function, "file": file, "line": line, "route": route,
                 "cpu": diff[0], "wait": diff[1], "gil": diff[2], "cpu_gil_free": diff[3]}
            )  # fmt: skip
    samples.sort(key=lambda s: -(s["cpu"] + s["wait"] + s["gil"]))
    return {
        "hz": now.get("hz"),
        "ticks": now.get("ticks", 0) - before.get("ticks", 0),
        "outside_app": now.get("outside_app", 0) - before.get("outside_app", 0),
        "gil_ticks": now.get("gil_ticks", 0) - before.get("gil_ticks", 0),
        "alarm_ticks": now.get("alarm_ticks", 0) - before.get("alarm_ticks", 0),
        "samples": samples,
    }


SAMPLES_TIMEOUT_S = 5.0  # a loop still blocked answers late; a worker that never does is left out
SAMPLES_TRIES_PER_PROCESS = 12


def per_process(
    debug: str | None, what: str, processes: int = 1, timeout: float = SAMPLES_TIMEOUT_S
) -> dict[int, dict[str, Any]] | None:
    """``{debug}/{what}`` of each server process, by PID (None without instrumentation or an
    answer). Several worker processes share one port: each request goes over a fresh connection,
    until every one of them has answered or the tries run out."""
    if debug is None:
        return None
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 4 * timeout
    for _ in range(max(1, processes) * (1 if processes <= 1 else SAMPLES_TRIES_PER_PROCESS)):
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = httpx.get(f"{debug}/{what}", timeout=timeout, headers={"Connection": "close"}).json()
            if isinstance(answer, dict):
                found[int(answer.get("pid") or 0)] = answer
        if len(found) >= processes or time.monotonic() > deadline:
            break
    return found or None


def loop_samples(debug: str | None, processes: int = 1) -> dict[int, dict[str, Any]] | None:
    """Each server process's loop-sampler snapshot, by PID."""
    return per_process(debug, "samples", processes)


def loop_stacks(
    debug: str | None, processes: int = 1, timeout: float = SAMPLES_TIMEOUT_S
) -> dict[int, dict[str, Any]] | None:
    """Each server process's loop stacks from its sampler (``/debug/stacks``), by PID."""
    return per_process(debug, "stacks", processes, timeout)


def one_process(by_pid: dict[int, dict[str, Any]] | None) -> dict[str, Any] | None:
    """The answer of a server of one process (the first, if there are more)."""
    return next(iter(by_pid.values())) if by_pid else None


def all_stalls(debug: str | None, processes: int = 1) -> list[dict[str, Any]] | None:
    """The stalls every server process recorded, newest first (None without an answer)."""
    by_pid = per_process(debug, "stalls", processes)
    if by_pid is None:
        return None
    stalls = [s for answer in by_pid.values() for s in answer.get("stalls") or []]
    return sorted(stalls, key=lambda s: -float(s.get("started_at") or 0))


def samples_between(before: dict[int, dict[str, Any]] | None, now: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The loop samplers' record of every process between two ``loop_samples`` calls, added up
    as the analysis adds the workers' loops up."""
    parts = [samples_since((before or {}).get(pid), snap) for pid, snap in sorted(now.items())]
    merged: dict[tuple[Any, ...], list[int]] = {}
    for part in parts:
        for key, counts in sample_counts(part).items():
            merged[key] = [a + b for a, b in zip(merged.get(key, [0, 0, 0, 0]), counts, strict=True)]
    samples = [
        {"function": k[0], "file": k[1], "line": k[2], "route": k[3], "cpu": c[0], "wait": c[1], "gil": c[2],
         "cpu_gil_free": c[3]}
        for k, c in sorted(merged.items(), key=lambda kv: -sum(kv[1][:3]))
    ]  # fmt: skip
    return {
        "hz": parts[0].get("hz") if parts else None,
        "pids": sorted(now),
        "ticks": sum(int(p.get("ticks") or 0) for p in parts),
        "outside_app": sum(int(p.get("outside_app") or 0) for p in parts),
        "gil_ticks": sum(int(p.get("gil_ticks") or 0) for p in parts),
        "alarm_ticks": sum(int(p.get("alarm_ticks") or 0) for p in parts),
        "samples": samples,
    }
