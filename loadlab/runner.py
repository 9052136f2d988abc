"""One profiling run, step by step. This module owns the order; the details live elsewhere.

A run: pick ports → start the upstream stub (demo app) → start uvicorn under py-spy → wait until
ready → measure the canary idle → drive Locust headless while polling the app's inner state →
stop the server so py-spy writes its profile → render flame graphs → write ``run.json``.
``run.json`` is rewritten after every step, so a run stopped anywhere keeps what it gathered.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil

from loadlab.analysis.health import STATUS_OF, assess, pyspy_warnings
from loadlab.analysis.stacks import Profile, ProfileFormatError, read_raw
from loadlab.analysis.summary import analyse_profile
from loadlab.config import ProfileConfig, loadlab_env, run_secrets
from loadlab.processes import (
    LOOPBACK,
    ManagedProcess,
    ProcessError,
    ProfiledServer,
    free_port,
    pyspy_argv,
    upstream_stub,
    uvicorn_argv,
    wait_ready,
)
from loadlab.progress import Progress
from loadlab.redact import redact_url, scrub_folder
from loadlab.report import render_run, write_comparison
from loadlab.results import (
    AGGREGATED,
    RAW_PROFILE,
    RUN_JSON,
    SCHEMA_VERSION,
    load_run,
    machine,
    new_run_dir,
    point_latest,
    read_locust_exceptions,
    read_locust_failures,
    read_locust_stats,
    versions,
    write_json,
)
from loadlab.wrap import USER_APP_PREFIX

CANARY_IDLE_SAMPLES = 20
PROFILE_STALL_MS = 25


class RunFailed(RuntimeError):
    """The run could not finish; ``run.json`` says why and what was kept."""


class Run:
    """The record of one run, saved to ``run.json`` whenever it changes."""

    def __init__(self, run_dir: Path, config: ProfileConfig, variant: str | None) -> None:
        self.dir = run_dir
        self.data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kind": "run",
            "status": "incomplete",
            "phase": "starting",
            "reason": None,
            "variant": variant,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config.to_dict(),
            "env": loadlab_env(),
            "versions": versions(),
            "machine": machine(),
            "timings_s": {},
            "artefacts": {},
            "stats": [],
            "timeseries": [],
            "pids": {},
        }
        self._t0 = time.monotonic()
        self.save()

    def save(self) -> None:
        write_json(self.dir / RUN_JSON, self.data)

    @contextlib.contextmanager
    def phase(self, name: str, progress: Progress, text: str) -> Iterator[None]:
        self.data["phase"] = name
        self.save()
        progress.step(text)
        start = time.monotonic()
        try:
            yield
        finally:
            self.data["timings_s"][name] = round(time.monotonic() - start, 3)
            self.save()

    def artefact(self, key: str, path: Path) -> None:
        self.data["artefacts"][key] = path.name

    def finish(self, status: str, reason: str | None = None) -> None:
        self.data["status"] = status
        self.data["reason"] = reason
        self.data["timings_s"]["total"] = round(time.monotonic() - self._t0, 3)
        self.save()


def _server_command(cfg: ProfileConfig, port: int) -> tuple[list[str], dict[str, str]]:
    """The server's command line and the env it needs: uvicorn (``--workers N``) or gunicorn with
    the ``uvicorn-worker`` worker class, serving the app wrapped by loadlab unless told not to."""
    env: dict[str, str] = {}
    app, factory = cfg.app, cfg.factory
    if cfg.instrument:
        env["LOADLAB_WRAP_APP"] = cfg.app
        env["LOADLAB_WRAP_FACTORY"] = "1" if cfg.factory else "0"
        app, factory = "loadlab.wrap:create_app", True
    if cfg.server == "gunicorn":
        argv = [sys.executable, "-m", "gunicorn", f"{app}()" if factory else app]
        argv += ["--worker-class", "uvicorn_worker.UvicornWorker", "--workers", str(cfg.workers)]
        argv += ["--bind", f"{cfg.bind}:{port}", "--graceful-timeout", "5"]
        return argv, env
    extra = ["--workers", str(cfg.workers)] if cfg.workers > 1 else []
    if cfg.loop != "auto":
        extra += ["--loop", cfg.loop]
    return uvicorn_argv(app, port=port, host=cfg.bind, factory=factory, extra=extra), env


def _debug_prefix(client: httpx.Client, base: str) -> str | None:
    """Where the instrumentation answers: ``/__loadlab__`` for a user's app, ``""`` for the demo."""
    for prefix in (USER_APP_PREFIX, ""):
        with contextlib.suppress(httpx.HTTPError, ValueError):
            r = client.get(f"{base}{prefix}/debug/loop")
            if r.status_code == 200 and "lag_ms" in r.json():
                return prefix
    return None


def _canary_idle(client: httpx.Client, url: str) -> dict[str, float]:
    times = []
    for _ in range(CANARY_IDLE_SAMPLES):
        start = time.perf_counter()
        client.get(url)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[int(0.95 * (len(times) - 1))], 3),
        "samples": len(times),
    }


def _live_stats(csv_prefix: Path) -> tuple[float, int] | None:
    """The latest requests/s and failure count from Locust's stats history, if written yet."""
    path = Path(f"{csv_prefix}_stats_history.csv")
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r.get("Name") == AGGREGATED]
        if rows:
            return float(rows[-1]["Requests/s"]), int(rows[-1]["Total Failure Count"])
    return None


class _ProcessMeter:
    """CPU and memory of process trees (a server with its workers and pool children; Locust): CPU
    in percent of one core since the last reading — to tell when the CPU, not the model, was the
    limit — and resident memory, with the harness's own, for the soak test."""

    def __init__(self, roots: dict[str, int | None]) -> None:
        self._roots = {k: v for k, v in roots.items() if v}
        self._procs: dict[int, psutil.Process] = {}

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
        out["harness_rss_mb"] = round(psutil.Process().memory_info().rss / 2**20, 1)
        return out


SERVICE_PROBES = 5
SCENARIO_PARAMETERS = ("ms", "work", "rows", "kb", "chunks")  # loadtests/common.py's, by env var


def _wait_quiet(client: httpx.Client, debug_url: str | None, timeout: float = 3.0) -> None:
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


def _probe_service_times(client: httpx.Client, base: str, csv_prefix: Path) -> dict[str, float]:
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
                client.get(base + name, params=params, timeout=15.0)
                times.append((time.perf_counter() - start) * 1000)
        if len(times) == SERVICE_PROBES:
            out[name] = round(statistics.median(times), 3)
    return out


def _locust_argv(cfg: ProfileConfig, host: str, run_dir: Path) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(cfg.resolved_locustfile), "--headless"]
    argv += ["-u", str(cfg.users), "-r", f"{cfg.spawn_rate:g}", "-t", f"{cfg.duration:g}s", "-H", host]
    argv += ["--csv", str(run_dir / "locust"), "--html", str(run_dir / "locust.html")]
    argv += [
        "--json-file",
        str(run_dir / "locust"),
        "--only-summary",
        "--stop-timeout",
        "2",
    ]  # writes locust.json
    if cfg.locust_processes > 1:
        argv += ["--processes", str(cfg.locust_processes)]
    if cfg.tags:
        argv += ["-T", *cfg.tags]
    return argv


def _poll_during_load(
    run: Run,
    locust: ManagedProcess,
    server: ProfiledServer | None,
    client: httpx.Client,
    debug_url: str | None,
    cfg: ProfileConfig,
    progress: Progress,
) -> None:
    """Once a second, until Locust exits: poll the app's inner state, show live progress, and
    notice a server that died under load."""
    deadline = time.monotonic() + cfg.duration + 60
    start = time.monotonic()
    csv_prefix = run.dir / "locust"
    meter = _ProcessMeter({"server": run.data["pids"].get("server"), "locust": locust.pid})
    while locust.poll() is None:
        if time.monotonic() > deadline:
            raise RunFailed(f"Locust did not finish within {cfg.duration + 60:g} s; stopped it")
        if server is not None:
            # Know every descendant by PID while it is still ours: if the master crashes, its
            # children are re-parented and could not be found from it any more.
            server.process.remember_descendants()
        stopped = server.failure() if server is not None else None
        if server is not None and stopped is not None:
            raise RunFailed(f"{stopped} during the load test; last output:\n{server.process.tail()}")
        point: dict[str, Any] = {"t": round(time.monotonic() - start, 2)}
        if debug_url is not None:
            try:
                point.update(client.get(debug_url, params={"window_s": 1}, timeout=2.0).json())
            except (httpx.HTTPError, ValueError):
                point["unanswered"] = True  # the loop could not answer within 2 s: itself a finding
        point.update(meter.read())
        live = _live_stats(csv_prefix)
        if live is not None:
            point["rps"], point["failures"] = live
        run.data["timeseries"].append(point)
        run.save()  # once a second: an interrupted run keeps its time series
        left = max(0.0, cfg.duration - (time.monotonic() - start))
        rps = f"{point['rps']:.0f} req/s" if "rps" in point else "starting"
        lag = point.get("lag_ms", {}).get("max")
        progress.status(
            f"{rps}, {point.get('failures', 0)} failures"
            + (f", loop lag max {lag:.0f} ms" if lag is not None else "")
            + f", {left:.0f} s left"
        )
        time.sleep(max(0.0, 1.0 - (time.monotonic() - start) % 1.0))


def _start_server(
    run: Run, cfg: ProfileConfig, stack: ExitStack, env: dict[str, str], progress: Progress
) -> tuple[ProfiledServer, str]:
    """The upstream stub (demo app) and the server, under py-spy unless ``--no-profile``."""
    if cfg.is_demo_app:
        with run.phase("upstream", progress, "starting the upstream stub"):
            upstream, upstream_url = stack.enter_context(upstream_stub(log_path=run.dir / "upstream.log"))
            run.data["pids"]["upstream"] = upstream.pid
            env["LOADLAB_UPSTREAM_URL"] = upstream_url
    port = free_port(cfg.bind)
    base = f"http://{LOOPBACK if cfg.bind in ('0.0.0.0', '::') else cfg.bind}:{port}"
    server_argv, server_env = _server_command(cfg, port)
    env.update(server_env)
    # The stall watchdog names loop blockers of 25 ms and more while profiling (its own default,
    # 100 ms, would miss a 20 ms CPU call repeated back to back).
    env.setdefault("LOADLAB_STALL_MS", str(PROFILE_STALL_MS))
    profiler = (
        pyspy_argv(run.dir / RAW_PROFILE, rate=cfg.rate, native=cfg.native, nonblocking=cfg.nonblocking)
        if cfg.profile
        else None
    )
    what = f"py-spy at {cfg.rate} Hz{' with --native' if cfg.native else ''}" if cfg.profile else "no profiler"
    with run.phase("server", progress, f"starting {cfg.app} on {base} ({what})"):
        server = stack.enter_context(
            ProfiledServer(server_argv, profiler_argv=profiler, env=env, log_path=run.dir / "server.log")
        )
        run.artefact("server_log", run.dir / "server.log")
        if cfg.profile:
            run.data["pids"]["profiler"] = server.process.pid
        run.data["pids"]["server"] = server.server_pid()
    with run.phase("ready", progress, "waiting for the app to answer"):
        try:
            wait_ready(server, base + cfg.health_path, timeout=cfg.ready_timeout, any_status=True)
        except ProcessError as exc:
            raise RunFailed(str(exc)) from None
    return server, base


def run_once(cfg: ProfileConfig, run_dir: Path, progress: Progress, variant: str | None = None) -> dict[str, Any]:
    """Profile one server under one load; return the run record (also in ``run_dir/run.json``).

    With ``--target-host`` no server is started: Locust loads that host, and its instrumentation
    (if it has loadlab's) is polled, but nothing is profiled.
    """
    run = Run(run_dir, cfg, variant)
    raw_path = run_dir / RAW_PROFILE
    try:
        with ExitStack() as stack, httpx.Client(timeout=5.0) as client:
            env = dict(os.environ)
            server: ProfiledServer | None = None
            if cfg.target_host:
                base = cfg.target_host.rstrip("/")
                _check_reachable(client, base + cfg.health_path)
            else:
                server, base = _start_server(run, cfg, stack, env, progress)
            prefix = _debug_prefix(client, base) if cfg.instrument else None
            debug_url = f"{base}{prefix}/debug/loop" if prefix is not None else None
            if prefix is not None:
                routes = client.get(f"{base}{prefix}/debug/routes").json()
                write_json(run_dir / "routes.json", routes)
                run.artefact("routes", run_dir / "routes.json")
            run.data["server"] = {"url": redact_url(base), "debug_prefix": prefix}
            run.data["canary_idle"] = _canary_idle(client, base + cfg.health_path)
            tags = f" -T {' '.join(cfg.tags)}" if cfg.tags else ""
            load_text = f"load: {cfg.users} users for {cfg.duration:g} s ({cfg.resolved_locustfile}{tags})"
            with run.phase("load", progress, load_text):
                locust_env = dict(env, LOADLAB_HOST=base, LOADLAB_THRESHOLDS_OUT=str(run_dir / "thresholds.json"))
                locust = stack.enter_context(
                    ManagedProcess(
                        _locust_argv(cfg, base, run_dir), name="locust", env=locust_env, log_path=run_dir / "locust.log"
                    )
                )
                run.data["pids"]["locust"] = locust.pid
                _poll_during_load(run, locust, server, client, debug_url, cfg, progress)
                run.data["locust_exit_code"] = locust.poll()
                if prefix is not None:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        run.data["stalls"] = client.get(f"{base}{prefix}/debug/stalls").json()["stalls"]
                _wait_quiet(client, debug_url)
                run.data["service_probe"] = _probe_service_times(client, base, run.dir / "locust")
            if server is not None:
                stopping = "stopping the server" + (" (py-spy writes the profile)" if cfg.profile else "")
                with run.phase("stopping", progress, stopping):
                    run.data["leftover_pids"] = server.stop()
                    stack.close()
                if cfg.profile:
                    run.data["profiler_exit_code"] = server.process.returncode
                    run.data["profiler_warnings"] = pyspy_warnings(run_dir / "server.log")
        _collect_locust(run, run_dir)
        with run.phase("rendering", progress, "analysing, flame graphs and the report"):
            profile = _analyse(run, raw_path) if cfg.profile and not cfg.target_host else None
        health = run.data["health"] = assess(run.data)
        run.finish(STATUS_OF[health["verdict"]], health["problems"][0]["text"] if health["problems"] else None)
        render_run(run_dir, profile)  # reads the saved run.json; adds flame graphs, verdicts, theory
    except (KeyboardInterrupt, Exception) as exc:
        if isinstance(exc, KeyboardInterrupt):
            run.finish("incomplete", f"interrupted during {run.data['phase']}")
        elif isinstance(exc, httpx.HTTPError):
            run.finish("failed", f"the server stopped answering ({type(exc).__name__}: {exc})")
        else:
            run.finish("failed", str(exc) if isinstance(exc, RunFailed) else f"{type(exc).__name__}: {exc}")
        _keep_what_was_gathered(run, raw_path, cfg)
        if isinstance(exc, httpx.HTTPError):
            raise RunFailed(run.data["reason"]) from None
        raise
    finally:
        # Locust writes the host, credentials included, into its reports; nothing leaves the run
        # folder with a secret in it.
        scrub_folder(run_dir, run_secrets(cfg))
    return load_run(run_dir)  # with the report added


def _check_reachable(client: httpx.Client, url: str) -> None:
    """``--target-host`` answers at all (any status), or the run stops here with why."""
    try:
        client.get(url, timeout=5.0)
    except httpx.HTTPError as exc:
        raise RunFailed(
            f"--target-host does not answer at {redact_url(url)} ({type(exc).__name__}: {exc or 'no answer'}); "
            "is the server running there?"
        ) from None


def _collect_locust(run: Run, run_dir: Path) -> None:
    run.data["stats"] = read_locust_stats(run_dir / "locust")
    run.data["locust_failures"] = read_locust_failures(run_dir / "locust")[:10]
    run.data["locust_exceptions"] = read_locust_exceptions(run_dir / "locust")[:10]
    for key, name in (
        ("locust_html", "locust.html"),
        ("locust_json", "locust.json"),
        ("locust_log", "locust.log"),
    ):
        if (run_dir / name).exists():
            run.artefact(key, run_dir / name)
    if (run_dir / "locust_stats.csv").exists():
        run.artefact("locust_csv", run_dir / "locust_stats.csv")
    thresholds = run_dir / "thresholds.json"
    if thresholds.exists():
        with contextlib.suppress(ValueError, OSError):
            run.data["thresholds"] = json.loads(thresholds.read_text())
            run.artefact("thresholds", thresholds)
    code = run.data.get("locust_exit_code")
    if code not in (0, None) and not run.data["stats"]:
        log = run_dir / "locust.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
        raise RunFailed(f"Locust exited with code {code} and produced no stats; its last output:\n{tail}")


def _analyse(run: Run, raw_path: Path) -> Profile | None:
    """Parse the raw profile once and store its analysis; the parsed profile goes on to the renderers."""
    if not raw_path.exists() or raw_path.stat().st_size == 0:
        run.data["profile_error"] = "py-spy wrote no profile (see server.log)"
        return None
    run.artefact("profile_raw", raw_path)
    try:
        profile = read_raw(raw_path)
    except ProfileFormatError as exc:
        run.data["profile_error"] = str(exc)
        return None
    run.data["analysis"] = analyse_profile(profile, routes_file=run.dir / "routes.json", stalls=run.data.get("stalls"))
    return profile


def _keep_what_was_gathered(run: Run, raw_path: Path, cfg: ProfileConfig) -> None:
    """After a failure or an interruption: keep Locust's outputs and render the partial profile."""
    with contextlib.suppress(Exception):
        run.data["stats"] = read_locust_stats(run.dir / "locust")
        run.data["locust_failures"] = read_locust_failures(run.dir / "locust")[:10]
        run.data["locust_exceptions"] = read_locust_exceptions(run.dir / "locust")[:10]
    with contextlib.suppress(Exception):
        run.data["health"] = assess(run.data)
    profile = None
    if cfg.profile and not cfg.target_host and raw_path.exists():
        with contextlib.suppress(Exception):
            profile = _analyse(run, raw_path)
    run.save()
    with contextlib.suppress(Exception):
        render_run(run.dir, profile)


def run_profile(cfg: ProfileConfig, progress: Progress) -> Path:
    """The whole job: one run, or one run per variant side by side; returns the run folder.

    With variants, the folder holds one sub-folder per variant (each a complete run with its own
    ``run.json``) and a ``run.json`` of kind ``suite`` that lists them.
    """
    cfg = cfg.validated()
    variants = cfg.resolved_variants
    name = cfg.scenario if cfg.locustfile is None else cfg.resolved_locustfile.stem
    run_dir = new_run_dir(cfg.profiles_dir, name, cfg.out)
    if cfg.out is None:
        point_latest(cfg.profiles_dir, run_dir)
    progress.note(f"run folder: {run_dir}")
    if not variants:
        run_once(cfg, run_dir, progress)
        return run_dir
    suite: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": "suite",
        "status": "incomplete",
        "reason": None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": cfg.to_dict(),
        "env": loadlab_env(),
        "versions": versions(),
        "machine": machine(),
        "variants": [],
    }
    write_json(run_dir / RUN_JSON, suite)
    start = time.monotonic()
    try:
        for i, variant in enumerate(variants, 1):
            progress.note(f"— variant {i}/{len(variants)}: {variant}")
            vdir = run_dir / variant
            vdir.mkdir()
            entry: dict[str, Any] = {"name": variant, "dir": variant, "status": "incomplete"}
            suite["variants"].append(entry)
            try:
                run_once(cfg.for_variant(variant), vdir, progress, variant=variant)
            finally:
                with contextlib.suppress(Exception):
                    entry.update(_variant_summary(vdir))
                write_json(run_dir / RUN_JSON, suite)
        suite["status"], suite["reason"] = _suite_status(suite["variants"])
        write_json(run_dir / RUN_JSON, suite)
        progress.note(f"comparison: {write_comparison([run_dir], run_dir)}")
    except KeyboardInterrupt:
        suite["status"] = "incomplete"
        suite["reason"] = "interrupted"
        raise
    except Exception as exc:
        suite["status"] = "failed"
        suite["reason"] = str(exc).splitlines()[0]
        raise
    finally:
        suite["timings_s"] = {"total": round(time.monotonic() - start, 3)}
        write_json(run_dir / RUN_JSON, suite)
    return run_dir


def _suite_status(variants: list[dict[str, Any]]) -> tuple[str, str | None]:
    """A suite is as good as its worst variant: failed, else doubtful, else complete; the reason
    names each variant that was not complete."""
    for status in ("failed", "doubtful"):
        bad = [v for v in variants if v.get("status") == status]
        if bad:
            return status, "; ".join(f"{v['name']}: {v.get('reason') or status}" for v in bad)
    return "complete", None


def _variant_summary(vdir: Path) -> dict[str, Any]:
    """The few figures of a variant that the suite's run.json repeats for a quick look."""
    data = json.loads((vdir / RUN_JSON).read_text(encoding="utf-8"))
    stats = {s["name"]: s for s in data.get("stats", [])}
    loop = data.get("analysis", {}).get("loop", {})
    blockers = loop.get("blockers") or [{}]
    return {
        "status": data["status"],
        "reason": data.get("reason"),
        "rps": stats.get(AGGREGATED, {}).get("rps"),
        "loop_busy_share": loop.get("busy_share"),
        "top_blocker": blockers[0].get("function"),
    }
