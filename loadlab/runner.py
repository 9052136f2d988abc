"""One profiling run, step by step. This module owns the order; the details live elsewhere.

A run: pick ports → start the upstream stub (demo app) → start the server (py-spy attaches once a
thread besides the loop runs, or starts it) → wait until ready → measure the canary idle → drive
Locust headless while polling the app's inner state → stop the server so py-spy writes its profile
→ judge the run's health → analyse, render.
``run.json`` is rewritten after every step, so a run stopped anywhere keeps what it gathered.
:func:`run_once` reads as the table of contents; each phase is a function below it, and the
measurements around the load live in :mod:`loadlab.measure`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from loadlab.agent_client import AgentClient, AgentError
from loadlab.analysis.attribution import analyse_profile
from loadlab.analysis.health import STATUS_OF, assess, pyspy_warnings
from loadlab.analysis.stacks import Profile, ProfileFormatError, read_raw
from loadlab.config import ProfileConfig, is_loopback, loadlab_env, run_secrets
from loadlab.instrument import LOOP_SAMPLE_ENV
from loadlab.measure import (
    ProcessMeter,
    all_stalls,
    canary_idle,
    idle_cpu,
    live_stats,
    loop_samples,
    probe_service_times,
    samples_between,
    wait_quiet,
)
from loadlab.processes import (
    LOCUST_OUTPUTS,
    LOOPBACK,
    ManagedProcess,
    ProcessError,
    ProfiledServer,
    free_port,
    locust_argv,
    locust_worker_command,
    upstream_stub,
    uvicorn_argv,
    wait_ready,
)
from loadlab.progress import Progress
from loadlab.recording import Recording, median_cpu, threads_to_ignore
from loadlab.redact import redact_url, scrub_folder
from loadlab.render.charts import preload as preload_charts
from loadlab.report import render_run, write_comparison
from loadlab.results import (
    RAW_PROFILE,
    RunRecord,
    aggregated_row,
    load_run,
    loop_analysis,
    new_run_dir,
    point_latest,
    read_locust_exceptions,
    read_locust_failures,
    read_locust_stats,
    record_header,
    write_json,
)
from loadlab.wrap import USER_APP_PREFIX

# The stall watchdog's threshold while profiling: its own default, 100 ms, would miss a 20 ms
# CPU call repeated back to back.
PROFILE_STALL_MS = 25
# The app's own loop sampler (waiting, computing or the GIL, per sample) runs beside py-spy.
LOOP_SAMPLE_HZ = 100
# Locust may run this much longer than --duration (start-up, its stop timeout) before it is
# called stuck and stopped.
LOCUST_GRACE_S = 60.0
POLL_INTERVAL_S = 1.0  # the app's inner state and Locust's live figures, once a second
DEBUG_TIMEOUT_S = 2.0  # a loop that cannot answer its own debug route in this long is a finding
KEEP_FAILURES = 10  # the most frequent failures and exceptions run.json keeps
KEEP_STACKS_EVERY = 5  # seconds of load between two copies of the app's loop stacks, while no py-spy runs


class RunFailed(RuntimeError):
    """The run could not finish; ``run.json`` says why and what was kept."""


class Run(RunRecord):
    """The record of one run, saved to ``run.json`` whenever it changes."""

    def __init__(self, run_dir: Path, config: ProfileConfig, variant: str | None, kind: str = "run") -> None:
        header = record_header(kind, config.to_dict(), loadlab_env())
        fields: dict[str, Any] = {"phase": "starting", "variant": variant, "timings_s": {}, "artefacts": {}}
        fields.update(stats=[], timeseries=[], pids={})
        super().__init__(run_dir, {**header, **fields})
        self.save()
        self._t0 = time.monotonic()

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


@dataclass(frozen=True)
class Target:
    """What the load goes to: the server this run started (None with ``--target-host``), its
    base URL, and where its instrumentation answers (None when it has none)."""

    server: ProfiledServer | None
    base: str
    debug_prefix: str | None
    agent: AgentClient | None = None

    @property
    def debug_url(self) -> str | None:
        return None if self.debug_prefix is None else f"{self.base}{self.debug_prefix}/debug/loop"


def run_once(cfg: ProfileConfig, run_dir: Path, progress: Progress, variant: str | None = None) -> dict[str, Any]:
    """Profile one server under one load; return the run record (also in ``run_dir/run.json``).

    With ``--target-host`` no server is started: Locust loads that host, and its instrumentation
    (if it has loadlab's) is polled, but nothing is profiled.
    """
    run = Run(run_dir, cfg, variant)
    target: Target | None = None
    try:
        with ExitStack() as children, httpx.Client(timeout=5.0) as client:
            target = _start_target(run, cfg, children, client, progress)
            run.data["canary_idle"] = canary_idle(client, target.base + cfg.health_path)
            _drive_load(run, cfg, children, client, target, progress)
            _stop_server(run, cfg, target, progress)
        _collect_locust(run)
        with run.phase("rendering", progress, "analysing, flame graphs and the report"):
            profile = _analyse(run, run_dir / RAW_PROFILE) if cfg.profile and not cfg.target_host else None
        _judge_health(run)
        render_run(run_dir, profile)  # reads the saved run.json; adds flame graphs, verdicts, theory
    except (KeyboardInterrupt, Exception) as exc:
        _record_failure(run, exc)
        if target is not None and target.server is not None and cfg.profile:
            with contextlib.suppress(Exception):
                _record_on_demand(run, target.server)  # the server has stopped: its profile is merged
        _keep_what_was_gathered(run, cfg)
        if isinstance(exc, httpx.HTTPError | AgentError):
            raise RunFailed(run.data["reason"]) from None
        raise
    finally:
        # Locust writes the host, credentials included, into its reports; nothing leaves the run
        # folder with a secret in it.
        scrub_folder(run_dir, run_secrets(cfg))
    return load_run(run_dir)  # with the report added


def _start_target(
    run: Run, cfg: ProfileConfig, children: ExitStack, client: httpx.Client, progress: Progress
) -> Target:
    """Start the server (or check ``--target-host`` answers), find its instrumentation, and
    record its routes."""
    server: ProfiledServer | None = None
    if cfg.agent:
        return _start_on_agent(run, cfg, children, progress)
    if cfg.target_host:
        base = cfg.target_host.rstrip("/")
        _check_reachable(client, base + cfg.health_path)
    else:
        server, base = _start_server(run, cfg, children, dict(os.environ), progress)
    prefix = _debug_prefix(client, base) if cfg.instrument else None
    if prefix is not None:
        write_json(run.dir / "routes.json", client.get(f"{base}{prefix}/debug/routes").json())
        run.artefact("routes", run.dir / "routes.json")
    run.data["server"] = {"url": redact_url(base), "debug_prefix": prefix}
    if server is not None and server.on_demand:  # py-spy attaches once a thread besides the loop runs
        server.watch_threads(threads_to_ignore(None if prefix is None else f"{base}{prefix}/debug"))
    return Target(server, base, prefix)


def _start_on_agent(run: Run, cfg: ProfileConfig, children: ExitStack, progress: Progress) -> Target:
    """Ask the agent on the app's host to start the server under py-spy; the load goes to it from
    here. The agent polls the app's loop (its debug routes answer their own host only)."""
    assert cfg.agent is not None and cfg.agent_token_file is not None
    agent = children.enter_context(AgentClient(cfg.agent, cfg.agent_token_file))
    with run.phase("server", progress, f"asking the agent at {redact_url(cfg.agent)} to start {cfg.app}"):
        started = agent.start(cfg)
    run.data["agent"] = {"url": redact_url(cfg.agent), "recording": started["id"]}
    run.data["server"] = {"url": redact_url(started["url"]), "debug_prefix": started["debug_prefix"]}
    return Target(None, started["url"], None, agent)


def _server_command(cfg: ProfileConfig, port: int) -> tuple[list[str], dict[str, str]]:
    """The server's command line and the env it needs: uvicorn (``--workers N``) or gunicorn with
    the ``uvicorn-worker`` worker class, serving the app wrapped by loadlab unless told not to."""
    env: dict[str, str] = {}
    app, factory = cfg.app, cfg.factory
    if not is_loopback(cfg.bind) and cfg.bind != "0.0.0.0":
        # The harness then reaches the server at that address, and the debug routes answer only
        # loopback and the networks LOADLAB_DEBUG_ALLOW names (an address, not a host name).
        own = [f"{a}/32" for a in sorted({i[4][0] for i in socket.getaddrinfo(cfg.bind, 0, socket.AF_INET)})]
        env["LOADLAB_DEBUG_ALLOW"] = ",".join(filter(None, [os.environ.get("LOADLAB_DEBUG_ALLOW", ""), *own]))
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


def _drive_load(
    run: Run, cfg: ProfileConfig, children: ExitStack, client: httpx.Client, target: Target, progress: Progress
) -> None:
    """Locust headless against the target until its run time ends, the app polled meanwhile;
    then the stalls the app recorded and each endpoint's service time on the idle server."""
    tags = f" -T {' '.join(cfg.tags)}" if cfg.tags else ""
    with run.phase(
        "load", progress, f"load: {cfg.users} users for {cfg.duration:g} s ({cfg.resolved_locustfile}{tags})"
    ):
        master = None
        if cfg.expect_workers:
            master = (cfg.expect_workers, cfg.master_bind, cfg.master_port, cfg.workers_wait)
            host = socket.gethostname() if cfg.master_bind == "0.0.0.0" else cfg.master_bind  # as others reach it
            command = locust_worker_command(cfg.resolved_locustfile, host, cfg.master_port, cfg.tags)
            run.data["locust_workers"] = {"expected": cfg.expect_workers, "command": command}
            progress.note(
                f"waiting up to {cfg.workers_wait:g} s for {cfg.expect_workers} Locust worker(s); start each with:\n"
                f"  {command}"
            )
        argv = locust_argv(
            cfg.resolved_locustfile, target.base, users=cfg.users, spawn_rate=cfg.spawn_rate, run_time_s=cfg.duration,
            outputs=run.dir, tags=cfg.tags, processes=cfg.locust_processes, master=master,
        )  # fmt: skip
        env = dict(os.environ, LOADLAB_HOST=target.base, LOADLAB_THRESHOLDS_OUT=str(run.dir / "thresholds.json"))
        if target.agent is not None and cfg.profile:
            target.agent.begin()
        locust = children.enter_context(ManagedProcess(argv, name="locust", env=env, log_path=run.dir / "locust.log"))
        run.data["load_started_at"] = time.time()  # the time series' zero, to place the app's stalls on it
        run.data["pids"]["locust"] = locust.pid
        samples_at_start = _poll_during_load(run, locust, target, client, cfg, progress)
        run.data["locust_exit_code"] = locust.poll()
        if target.server is not None and (stopped := target.server.failure()) is not None:
            # Died in the last second, or during Locust's stop timeout: still a crash under load.
            raise RunFailed(f"{stopped} during the load test; last output:\n{target.server.tail()}")
        if target.debug_prefix is not None:
            debug = f"{target.base}{target.debug_prefix}/debug"
            stalls = all_stalls(debug, cfg.workers)
            if stalls is not None:
                run.data["stalls"] = stalls
            by_pid = loop_samples(debug, cfg.workers)  # every worker's loop, as the profile has them all
            if by_pid:
                merged = samples_between(samples_at_start, by_pid)
                if merged["ticks"]:
                    run.data["loop_samples"] = merged
        wait_quiet(client, target.debug_url)
        run.data["server_idle_cpu_percent"] = idle_cpu(run.data["pids"].get("server"))
        run.data["service_probe"] = probe_service_times(client, target.base, run.dir / LOCUST_OUTPUTS)


def _poll_during_load(
    run: Run, locust: ManagedProcess, target: Target, client: httpx.Client, cfg: ProfileConfig, progress: Progress
) -> dict[int, dict[str, Any]] | None:
    """Once a second, until Locust exits: poll the app's inner state, show live progress, and
    notice a server (or py-spy) that died under load. Returns the loop sampler's counts at the
    moment py-spy attached, when it attaches late (remote workers), else None."""
    server = target.server
    start = time.monotonic()
    deadline = start + cfg.duration + LOCUST_GRACE_S + (cfg.workers_wait if cfg.expect_workers else 0)
    alone = {"profiler": server.profiler_pids} if server is not None and cfg.profile else None
    meter = ProcessMeter({"server": run.data["pids"].get("server"), "locust": locust.pid}, alone)
    samples_at_start: dict[int, dict[str, Any]] | None = None
    while locust.poll() is None:
        if time.monotonic() > deadline:
            raise RunFailed(f"Locust did not finish within {cfg.duration + LOCUST_GRACE_S:g} s; stopped it")
        if server is not None:
            if (
                server.attach_argv is not None
                and not server.on_demand
                and server.spy is None
                and _load_began(run.dir / "locust.log")
            ):
                run.data["pids"]["profiler"] = server.start_profiler()
                if target.debug_prefix is not None:  # the loop sampler's record starts there too
                    debug = f"{target.base}{target.debug_prefix}/debug"
                    samples_at_start = loop_samples(debug, cfg.workers)
                    if server.children is not None:
                        server.children.mark_loop_start(debug)
            if server.on_demand and "profiler" not in run.data["pids"]:
                if (spy := server.spy) is not None:  # attached since the last second
                    run.data["pids"]["profiler"] = spy.pid
                elif server.children is not None and target.debug_prefix is not None:
                    if len(run.data["timeseries"]) % KEEP_STACKS_EVERY == 0:  # each answer costs the loop ~7 ms
                        server.children.keep_loop_stacks(f"{target.base}{target.debug_prefix}/debug")
            # Know every descendant by PID while it is still ours: if the master crashes, its
            # children are re-parented and could not be found from it any more.
            server.process.remember_descendants()
            stopped = server.failure()
            if stopped is not None:
                raise RunFailed(f"{stopped} during the load test; last output:\n{server.tail()}")
        point = _sample(client, target, meter, run.dir, round(time.monotonic() - start, 2))
        run.data["timeseries"].append(point)
        run.save()  # once a second: an interrupted run keeps its time series
        progress.status(_status_line(point, max(0.0, cfg.duration - (time.monotonic() - start))))
        # Until the next second, or Locust's exit: its outputs are read at once, not up to a second later.
        locust.wait_exit(POLL_INTERVAL_S - (time.monotonic() - start) % POLL_INTERVAL_S)
    return samples_at_start


def _sample(client: httpx.Client, target: Target, meter: ProcessMeter, run_dir: Path, t: float) -> dict[str, Any]:
    """One point of ``timeseries``: the app's loop and threadpool, the CPU and memory of the
    server and Locust, and Locust's live requests/s and failures."""
    point: dict[str, Any] = {"t": t}
    if target.debug_url is not None:
        try:
            point.update(client.get(target.debug_url, params={"window_s": 1}, timeout=DEBUG_TIMEOUT_S).json())
        except (httpx.HTTPError, ValueError):
            point["unanswered"] = True  # the loop could not answer within 2 s: itself a finding
    point.update(meter.read())
    live = live_stats(run_dir / LOCUST_OUTPUTS)
    if live is not None:
        point["rps"], point["failures"] = live
    return point


def _status_line(point: dict[str, Any], left_s: float) -> str:
    rps = f"{point['rps']:.0f} req/s" if "rps" in point else "starting"
    lag = point.get("lag_ms", {}).get("max")
    lag_text = f", loop lag max {lag:.0f} ms" if lag is not None else ""
    return f"{rps}, {point.get('failures', 0)} failures{lag_text}, {left_s:.0f} s left"


def _stop_server(run: Run, cfg: ProfileConfig, target: Target, progress: Progress) -> None:
    """Stop the server first, so py-spy writes its profile; Locust and the stub stop after it."""
    if target.agent is not None:
        with run.phase("stopping", progress, "stopping the server on the agent (py-spy writes the profile)"):
            records = target.agent.stop(run.dir)
        series = records.pop("timeseries", [])
        run.data.update(records)
        _merge_series(run.data["timeseries"], series, run.data["timings_s"].get("load", 0.0))
        for name in records.get("files", []):
            key = {"server.log": "server_log", "routes.json": "routes", "py-spy.log": "profiler_log"}.get(name)
            if key is not None:
                run.artefact(key, run.dir / name)
        return
    server = target.server
    if server is None:
        return
    if server.children is not None and target.debug_prefix is not None:
        server.children.take_loop_stacks(f"{target.base}{target.debug_prefix}/debug")  # the app still runs
    with run.phase(
        "stopping", progress, "stopping the server" + (" (py-spy writes the profile)" if cfg.profile else "")
    ):
        run.data["leftover_pids"] = server.stop()
    if cfg.profile:
        attached = server.attach_argv is not None
        run.data["profiler_exit_code"] = server.spy_exit_code if attached else server.process.returncode
        run.data["profiler_warnings"] = pyspy_warnings(server.spy_log if attached else run.dir / "server.log")
        run.data["profiler"] = server.children_summary or {"mode": "subprocesses", "rate": cfg.rate}
        run.data["profiler"]["cpu_percent"] = median_cpu(run.data["timeseries"], "profiler")
        _record_on_demand(run, server)
        if server.watch is not None and server.watch.error:
            run.data["profile_error"] = f"py-spy could not attach when a thread began to run: {server.watch.error}"
        if server.children is not None:
            for pid, recorder_pid in server.children.recorder_pids().items():
                run.data["pids"][f"profiler_of_child_{pid}"] = recorder_pid
            run.data["profiler_warnings"] += pyspy_warnings(server.children.log_path)
        if attached and server.spy is None and not server.on_demand:
            run.data["profile_error"] = "py-spy never started: the load never began"


def _judge_health(run: Run) -> None:
    """The run's status from every signal it recorded (see :mod:`loadlab.analysis.health`)."""
    health = run.data["health"] = assess(run.data)
    run.finish(STATUS_OF[health["verdict"]], health["problems"][0]["text"] if health["problems"] else None)


def _merge_series(here: list[dict[str, Any]], there: list[dict[str, Any]], load_s: float) -> None:
    """The agent's loop points (seconds since the server started) into the harness's (since the
    load started), each by the nearest time: the load began ``there[-1] - load_s`` into the recording."""
    if not there:
        return
    if not here:
        here.extend(there)
        return
    offset = float(there[-1]["t"]) - load_s
    for point in here:
        nearest = min(there, key=lambda p: abs(float(p["t"]) - offset - float(point["t"])))
        if abs(float(nearest["t"]) - offset - float(point["t"])) <= 0.6:
            point.update({k: v for k, v in nearest.items() if k != "t"})


def _record_failure(run: Run, exc: BaseException) -> None:
    if isinstance(exc, KeyboardInterrupt):
        run.finish("incomplete", f"interrupted during {run.data['phase']}")
    elif isinstance(exc, httpx.HTTPError):
        run.finish("failed", f"the server stopped answering ({type(exc).__name__}: {exc})")
    else:
        run.finish("failed", str(exc) if isinstance(exc, RunFailed | AgentError) else f"{type(exc).__name__}: {exc}")


def _start_server(
    run: Run, cfg: ProfileConfig, children: ExitStack, env: dict[str, str], progress: Progress
) -> tuple[ProfiledServer, str]:
    """The upstream stub (demo app) and the server, profiled unless ``--no-profile`` (py-spy on
    demand: :meth:`ProfiledServer.watch_threads`, once it answers)."""
    if cfg.is_demo_app:
        with run.phase("upstream", progress, "starting the upstream stub"):
            upstream, upstream_url = children.enter_context(upstream_stub(log_path=run.dir / "upstream.log"))
            run.data["pids"]["upstream"] = upstream.pid
            env["LOADLAB_UPSTREAM_URL"] = upstream_url
    port = free_port(cfg.bind)
    base = f"http://{LOOPBACK if cfg.bind == '0.0.0.0' else cfg.bind}:{port}"
    server_argv, server_env = _server_command(cfg, port)
    env.update(server_env)
    env.setdefault("LOADLAB_STALL_MS", str(PROFILE_STALL_MS))
    # One uvicorn process: py-spy samples it alone, and its children (a process pool) get their own,
    # slower, non-pausing recorders; the loops of --workers N and gunicorn's workers are children,
    # so those are recorded with --subprocesses as before. With the app instrumented, its loop
    # sampler has the loop's exact stacks, and py-spy records the rest without pausing the server
    # (loadlab.recording).
    plan = Recording.of(cfg)
    profiler, recorders = None, None
    if cfg.profile:
        env.setdefault(LOOP_SAMPLE_ENV, str(LOOP_SAMPLE_HZ))
        for key, value in plan.app_env().items():
            env.setdefault(key, value)
        profiler = plan.pyspy_argv(run.dir / RAW_PROFILE)
        recorders = plan.child_recorders(run.dir / RAW_PROFILE, run.dir / "py-spy-children.log")
    what = plan.describe() if cfg.profile else "no profiler"
    preload_charts()  # the report's matplotlib, imported on the other core while the server starts
    with run.phase("server", progress, f"starting {cfg.app} on {base} ({what})"):
        # Workers started elsewhere may take a while to come: py-spy then attaches when the load
        # begins, so the wait is not in the profile.
        server = children.enter_context(
            ProfiledServer(
                server_argv, profiler_argv=profiler, env=env, log_path=run.dir / "server.log",
                attach=bool(cfg.expect_workers), children=recorders, on_demand=plan.on_demand,
            )
        )  # fmt: skip
        run.artefact("server_log", run.dir / "server.log")
        if cfg.profile and server.attach_argv is None:
            run.data["pids"]["profiler"] = server.process.pid
        run.data["pids"]["server"] = server.server_pid()
    with run.phase("ready", progress, "waiting for the app to answer"):
        server.ready = False
        try:
            wait_ready(server, base + cfg.health_path, timeout=cfg.ready_timeout, any_status=True)
        except ProcessError as exc:
            raise RunFailed(str(exc)) from None
        server.ready = True
    return server, base


def _check_reachable(client: httpx.Client, url: str) -> None:
    """``--target-host`` answers at all (any status), or the run stops here with why."""
    try:
        client.get(url, timeout=5.0)
    except httpx.HTTPError as exc:
        raise RunFailed(
            f"--target-host does not answer at {redact_url(url)} ({type(exc).__name__}: {exc or 'no answer'}); "
            "is the server running there?"
        ) from None


def _collect_locust(run: Run) -> None:
    """Locust's final figures, its failures and exceptions, and its outputs as artefacts."""
    _read_locust_results(run)
    for key, name in (
        ("locust_html", "locust.html"),
        ("locust_json", "locust.json"),
        ("locust_log", "locust.log"),
        ("locust_csv", "locust_stats.csv"),
    ):
        if (run.dir / name).exists():
            run.artefact(key, run.dir / name)
    thresholds = run.dir / "thresholds.json"
    if thresholds.exists():
        with contextlib.suppress(ValueError, OSError):
            run.data["thresholds"] = json.loads(thresholds.read_text())
            run.artefact("thresholds", thresholds)
    if "locust_workers" in run.data:
        run.data["locust_workers"]["missing"] = _missing_workers(run.dir / "locust.log")
    code = run.data.get("locust_exit_code")
    workers = run.data.get("locust_workers") or {}
    if any("Gave up" in m for m in workers.get("missing", [])):
        came = (run.dir / "locust.log").read_text(errors="replace").count("reported as ready")
        raise RunFailed(
            f"{workers['expected']} Locust worker(s) were expected but {came} connected "
            f"within --workers-wait; start each with: {workers['command']}"
        )
    if code not in (0, None) and not run.data["stats"]:
        log = run.dir / "locust.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
        raise RunFailed(f"Locust exited with code {code} and produced no stats; its last output:\n{tail}")


# What Locust's master logs when a worker stops answering, or never came.
_WORKER_TROUBLE = re.compile(r"failed to send heartbeat|went missing|Gave up waiting for workers|Worker \S+ .*quit")
_RUN_ENDED = re.compile(r"--run-time limit reached|Shutting down")  # workers quit after this by design


def _load_began(log: Path) -> bool:
    """The Locust master sent the users to its workers (it logs this once they all came)."""
    try:
        return "Sending spawn jobs" in log.read_text(errors="replace")
    except OSError:
        return False


def _missing_workers(log: Path) -> list[str]:
    """The master's lines about workers that vanished (or never connected) before the run's end,
    without their prefix."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        if _RUN_ENDED.search(line):
            break
        if _WORKER_TROUBLE.search(line):
            found.append(line.split("/", 1)[-1].split(": ", 1)[-1].strip())
    return found[:5]


def _read_locust_results(run: Run) -> None:
    prefix = run.dir / LOCUST_OUTPUTS
    run.data["stats"] = read_locust_stats(prefix)
    run.data["locust_failures"] = read_locust_failures(prefix)[:KEEP_FAILURES]
    run.data["locust_exceptions"] = read_locust_exceptions(prefix)[:KEEP_FAILURES]


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
    run.data["analysis"] = analyse_profile(
        profile,
        routes_file=run.dir / "routes.json",
        stalls=run.data.get("stalls"),
        loop_samples=run.data.get("loop_samples"),
    )
    return profile


def _record_on_demand(run: Run, server: ProfiledServer) -> None:
    """``run.json``'s record of an on-demand py-spy (and of how the profile was merged): at the
    stop, or after a failure, once the server has stopped."""
    if server.children_summary is not None and "profiler" not in run.data:
        run.data["profiler"] = server.children_summary
    on_demand = server.on_demand_summary()
    if on_demand is not None and isinstance(run.data.get("profiler"), dict):
        run.data["profiler"]["on_demand"] = on_demand
    if on_demand is not None and server.spy is not None:
        run.data["pids"]["profiler"] = server.spy.pid  # (also when it attached in the last second)


def _keep_what_was_gathered(run: Run, cfg: ProfileConfig) -> None:
    """After a failure or an interruption: keep Locust's outputs and render the partial profile."""
    with contextlib.suppress(Exception):
        _read_locust_results(run)
    with contextlib.suppress(Exception):
        run.data["health"] = assess(run.data)
    profile = None
    raw_path = run.dir / RAW_PROFILE
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
    record = RunRecord.create(run_dir, "suite", cfg.to_dict(), loadlab_env(), variants=[])
    suite = record.data
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
            except (RunFailed, ProcessError) as exc:
                # Its run.json says why; the other variants still run and are compared.
                progress.note(f"{variant} failed: {str(exc).splitlines()[0]}")
            finally:
                with contextlib.suppress(Exception):
                    entry.update(_variant_summary(vdir))
                record.save()
        suite["status"], suite["reason"] = _suite_status(suite["variants"])
        record.save()
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
        record.save()
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
    data = load_run(vdir)
    total, loop = aggregated_row(data), loop_analysis(data)
    return {
        "status": data["status"],
        "reason": data.get("reason"),
        "rps": total["rps"] if total else None,
        "loop_busy_share": loop["busy_share"] if loop else None,
        "top_blocker": loop["blockers"][0]["function"] if loop and loop["blockers"] else None,
    }
