"""``loadlab ui`` (``make locust``): Locust's web UI on any ASGI app, each test profiled.

    loadlab ui [--app MODULE:ATTR] [--scenario io | --locustfile FILE] [--web-port 8089]
               [--app-port 8000] [profile's flags …] [-- LOCUST ARGS]

The stub (demo app only), the app (wrapped with loadlab's instrumentation, not under py-spy) and
Locust's web UI start together and stop together on Ctrl-C. Each test started from the UI is
recorded by :mod:`loadlab.ui_tests` (py-spy attached from Start to Stop) into its own
``<profiles-dir>/<time>-ui/test-<n>/``, analysed like a ``loadlab profile`` run, and shown in the
web UI's Profile tab (:mod:`loadlab.ui_plugin`, loaded into Locust beside the locustfile; Locust
runs as a child process: importing it here would monkey-patch this process with gevent).

Both ports are checked before anything starts (a port taken is one line and exit 2). The logs of
the children go to the session folder (``locust.log``, ``server.log``, ``upstream.log``), kept
whatever happens; a child that fails is named in one line with the cause quoted from its log.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from loadlab.config import ProfileConfig, demo_path
from loadlab.instrument import LOOP_SAMPLE_ENV
from loadlab.measure import canary_idle
from loadlab.processes import (
    ALLOW_PTRACE_VAR,
    LOOPBACK,
    ManagedProcess,
    describe_exit,
    free_port,
    launched,
    locust_web_argv,
    uvicorn_argv,
)
from loadlab.recording import Recording
from loadlab.results import new_run_dir, write_json
from loadlab.runner import LOOP_SAMPLE_HZ, PROFILE_STALL_MS, _debug_prefix, _server_command
from loadlab.ui_tests import Recorder, Session


def _loadtests() -> Path:
    return demo_path("loadtests")  # the demo's scenarios, in a checkout (not in an installed loadlab)


DEFAULT_SCENARIO = "io"
UPSTREAM_APP = "target_app.upstream:app"
HEALTH_PATH = "/health"
SERVER_READY_S = 30.0
LOCUST_READY_S = 60.0
# The children's logs, in the run folder.
LOCUST_LOG = "locust.log"
SERVER_LOG = "server.log"
UPSTREAM_LOG = "upstream.log"
POLL_S = 0.25  # how often the session folder is looked at for tests started or stopped
# Read by the Locust plugin (loadlab/ui_plugin.py) and the server's launcher.
SESSION_VAR = "LOADLAB_UI_SESSION"
TAGS_VAR = "LOADLAB_UI_TAGS"
NO_PROFILE_VAR = "LOADLAB_UI_NO_PROFILE"


class ScenarioError(ValueError):
    """The scenario names no locustfile; the message lists the ones there are."""


class PortError(ValueError):
    """A port the UI needs cannot be bound on 127.0.0.1; the message names the flag to change."""


class ChildError(RuntimeError):
    """A child failed to start or died; the message names it, quotes the cause and its log."""


def scenarios() -> list[str]:
    """The scenario names: one per ``loadtests/<name>_routes.py``."""
    return sorted(p.name.removesuffix("_routes.py") for p in _loadtests().glob("*_routes.py"))


def locustfile_for(scenario: str) -> Path:
    """``io`` → ``loadtests/io_routes.py``; a path to an existing file is taken as it is."""
    as_path = Path(scenario)
    if as_path.suffix == ".py" and as_path.is_file():
        return as_path.resolve()
    candidate = _loadtests() / f"{scenario}_routes.py"
    if not candidate.is_file():
        raise ScenarioError(f"no scenario {scenario!r}; choose one of {', '.join(scenarios())} or a locustfile path")
    return candidate


@dataclass(frozen=True)
class UiConfig:
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    web_port: int = 8089
    app_port: int = 8000  # 0: any free port
    locust_args: tuple[str, ...] = ()

    @property
    def locustfile(self) -> Path:
        return self.profile.resolved_locustfile


def app_env(upstream_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LOADLAB_UPSTREAM_URL"] = upstream_url
    return env


# What each port is for: the flag (and env var) that changes it, and the likely occupant.
WEB_PORT_FLAG = ("--web-port (or LOCUST_WEB_PORT)", "another Locust web UI?")
APP_PORT_FLAG = ("--app-port (or PORT)", "the app already running, e.g. `make serve`?")


def port_problem(port: int, host: str = LOOPBACK) -> str | None:
    """None if ``port`` can be bound on ``host`` right now, else why not (``in use``, …).

    SO_REUSEADDR as uvicorn and Locust (gevent) set it: a port left in TIME_WAIT by the last
    run is free for them, so it is free here too; a port someone listens on is not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return "in use" if exc.errno == errno.EADDRINUSE else f"not usable ({exc.strerror or exc})"
    return None


def check_ports(config: UiConfig) -> None:
    """Raise :class:`PortError` naming the flag to change if a port the UI needs is taken."""
    if config.web_port == config.app_port:
        raise PortError(f"--web-port and --app-port are both {config.web_port}; pick two different ports")
    for port, (flag, occupant) in ((config.web_port, WEB_PORT_FLAG), (config.app_port, APP_PORT_FLAG)):
        if port == 0:  # the app's "any free port"
            continue
        problem = port_problem(port)
        if problem is not None:
            who = f" ({occupant})" if problem == "in use" else ""
            raise PortError(f"port {port} on {LOOPBACK} is {problem}{who}; pick another with {flag}")


_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)\b(?::\s.*)?$")
_ERROR_LINE = re.compile(r"\b(?:error|critical|fatal)\b", re.IGNORECASE)


def cause_from_log(text: str) -> str:
    """The line of a child's output that says why it failed, on one line.

    The last Python exception line (``OSError: [Errno 98] Address already in use``) if any; else
    the last line that says error (uvicorn's ``ERROR: …``, argparse's ``error: …``); else the last
    line. Locust prints its (empty) stats tables after the cause, so "the last line" alone is not it.
    """
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    chosen = next((line for line in reversed(lines) if _EXCEPTION_LINE.match(line)), None)
    if chosen is None:
        chosen = next((line for line in reversed(lines) if _ERROR_LINE.search(line)), None)
    if chosen is None:
        chosen = lines[-1] if lines else "no output"
    chosen = " ".join(chosen.split())
    return chosen if len(chosen) <= 300 else chosen[:297] + "..."


def _failure(proc: ManagedProcess, what: str, flag: str | None) -> ChildError:
    cause = cause_from_log(proc.tail(400))
    if flag and "address already in use" in cause.lower():
        cause += f" (pick another port with {flag})"
    return ChildError(f"{proc.name} {what}: {cause} [log: {proc.log_path}]")


def wait_until_ready(
    proc: ManagedProcess,
    url: str,
    timeout: float,
    stopped: Callable[[], bool],
    flag: str | None = None,
    any_status: bool = False,
) -> bool:
    """True once ``url`` answers 200 (any status with ``any_status``: an app without that path is
    up all the same); False if ``stopped()`` (Ctrl-C) first. Raises
    :class:`ChildError` with the cause from the child's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while not stopped():
            code = proc.poll()
            if code is not None:
                raise _failure(proc, f"exited ({describe_exit(code)}) before it was ready", flag)
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200 or any_status:
                    return True
            if time.monotonic() > deadline:
                raise _failure(proc, f"did not answer {url} within {timeout:g} s; its last words", flag)
            time.sleep(0.05)
    return False


PLUGIN = Path(__file__).with_name("ui_plugin.py")  # loaded by Locust; never imported here (gevent)


def server_command(cfg: ProfileConfig, port: int) -> tuple[list[str], dict[str, str]]:
    """The app's server as ``loadlab profile`` runs it (wrapped, --workers, --server, --loop), but
    not under py-spy: each test attaches py-spy to it. The launcher gives it a parent-death signal
    and, where Yama restricts ptrace to ancestors, lets a sibling py-spy attach."""
    argv, env = _server_command(cfg, port)
    argv = launched(argv)
    env[ALLOW_PTRACE_VAR] = "1"
    env.setdefault("LOADLAB_STALL_MS", str(PROFILE_STALL_MS))
    if cfg.profile:
        env.setdefault(LOOP_SAMPLE_ENV, str(LOOP_SAMPLE_HZ))
        for key, value in Recording.of(cfg).app_env().items():
            env.setdefault(key, value)
    return argv, env


def run(config: UiConfig) -> int:
    """Start the stub, the app and Locust's web UI; record each test; block until Ctrl-C."""
    cfg = config.profile
    locustfile = cfg.resolved_locustfile
    check_ports(config)
    run_dir = new_run_dir(cfg.profiles_dir, "ui")
    print(
        f"loadlab: logs in {run_dir}/ ({LOCUST_LOG}, {SERVER_LOG}, {UPSTREAM_LOG}); each test gets test-<n>/",
        flush=True,
    )
    # Ctrl-C must stop the children in order (py-spy, then Locust while the app still answers,
    # then the app), not raise wherever the main thread happens to be.
    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    def stopped() -> bool:
        return interrupted

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    recorder: Recorder | None = None
    try:
        # Exited in reverse: Locust, then the app, then the stub.
        with contextlib.ExitStack() as children, httpx.Client(timeout=5.0) as client:
            env = dict(os.environ)
            watched: list[ManagedProcess] = []
            if cfg.is_demo_app:
                stub_port = free_port()
                stub_url = f"http://{LOOPBACK}:{stub_port}"
                stub = ManagedProcess(
                    uvicorn_argv(UPSTREAM_APP, port=stub_port), name="upstream stub", log_path=run_dir / UPSTREAM_LOG
                )
                children.enter_context(stub)
                watched.append(stub)
                if not wait_until_ready(stub, stub_url + HEALTH_PATH, SERVER_READY_S, stopped):
                    return _interrupted(run_dir)
                env = app_env(stub_url)
            app_port = config.app_port or free_port()
            base_url = f"http://{LOOPBACK}:{app_port}"
            argv, server_env = server_command(cfg, app_port)
            app = ManagedProcess(argv, name="target app", env={**env, **server_env}, log_path=run_dir / SERVER_LOG)
            children.enter_context(app)
            watched.insert(0, app)
            ready_url = base_url + cfg.health_path
            if not wait_until_ready(app, ready_url, SERVER_READY_S, stopped, APP_PORT_FLAG[0], any_status=True):
                return _interrupted(run_dir)
            prefix = _debug_prefix(client, base_url) if cfg.instrument else None
            if prefix is not None:
                write_json(run_dir / "routes.json", client.get(f"{base_url}{prefix}/debug/routes").json())
            session = Session(run_dir, cfg, app.pid, base_url, prefix, canary_idle=canary_idle(client, ready_url))

            locust_env = dict(os.environ, LOADLAB_HOST=base_url)
            locust_env.update({SESSION_VAR: str(run_dir.resolve()), TAGS_VAR: ",".join(cfg.tags)})
            if not cfg.profile:
                locust_env[NO_PROFILE_VAR] = "1"
            argv = locust_web_argv(
                f"{locustfile},{PLUGIN}", base_url, web_port=config.web_port, extra=config.locust_args
            )
            locust = ManagedProcess(argv, name="Locust", env=locust_env, log_path=run_dir / LOCUST_LOG)
            children.enter_context(locust)
            web_url = f"http://{LOOPBACK}:{config.web_port}"
            if not wait_until_ready(locust, web_url + "/", LOCUST_READY_S, stopped, WEB_PORT_FLAG[0]):
                return _interrupted(run_dir)
            session.locust_pid, session.web_url = locust.pid, web_url
            recorder = Recorder(session)
            what = "each test is profiled with py-spy" if cfg.profile else "nothing is profiled (--no-profile)"
            print(
                f"loadlab: {locustfile.name} against {base_url}\n"
                f"loadlab: Locust web UI at {web_url}  ({what}; see the Profile tab)\n"
                "loadlab: Ctrl-C stops Locust, the app and the stub",
                flush=True,
            )
            while not interrupted and locust.poll() is None:
                for server in watched:
                    code = server.poll()
                    if code is not None:
                        raise _failure(server, f"exited ({describe_exit(code)}) while Locust was running", None)
                try:
                    recorder.poll()
                except FileNotFoundError:
                    raise ChildError(f"the session folder {run_dir} was removed while loadlab ui ran") from None
                time.sleep(POLL_S)
            if interrupted:
                # py-spy first (it writes what it has), then Locust (its last test's outputs are
                # written as it quits), then the analysis, while the app still answers.
                recorder.stop_recording()
                locust.stop()
                recorder.finish_interrupted()
            else:
                print(
                    f"loadlab: Locust exited ({describe_exit(locust.poll())}); its last output:\n{locust.tail()}\n"
                    f"loadlab: full log: {locust.log_path}",
                    file=sys.stderr,
                )
                return 1
        print(f"loadlab: stopped; logs in {run_dir}/", flush=True)
        return 0
    finally:
        if recorder is not None:
            recorder.stop_recording()  # a failure path: py-spy must not outlive the session
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupted(run_dir: Path) -> int:
    print(f"loadlab: interrupted before the web UI was ready; stopped. Logs in {run_dir}/", file=sys.stderr)
    return 130


if __name__ == "__main__":
    from loadlab.cli import main

    main(["ui", *sys.argv[1:]])
