"""``make locust``: the target app, its upstream stub and Locust's web UI, stopped together on Ctrl-C.

    loadlab ui [--scenario io] [--web-port 8089] [--app-port 8000]
                                [--profiles-dir profiles] [-- LOCUST ARGS]

``SCENARIO`` (env) or ``--scenario`` picks ``loadtests/<scenario>_routes.py`` (or any locustfile
path); arguments after ``--`` go to Locust unchanged (``-- -T blocking --arrival-rate 200``).
Locust runs as a child process: importing it here would monkey-patch this process with gevent.

Both ports are checked before anything starts (a port taken is one line and exit 2). The logs of
the three children go to a folder of their own, ``<profiles-dir>/<timestamp>-ui/`` (``locust.log``,
``server.log``, ``upstream.log``), kept whatever happens; a child that fails is named in one line
with the cause quoted from its log.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from loadlab.config import DEMO_APP, demo_path
from loadlab.processes import (
    LOOPBACK,
    ManagedProcess,
    ProcessError,
    describe_exit,
    free_port,
    locust_web_argv,
    uvicorn_argv,
)
from loadlab.results import RunFolderError, new_run_dir


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
    scenario: str = DEFAULT_SCENARIO
    web_port: int = 8089
    app_port: int = 8000  # 0: any free port
    app: str = DEMO_APP
    locust_args: tuple[str, ...] = field(default_factory=tuple)
    profiles_dir: Path = Path("profiles")

    @property
    def locustfile(self) -> Path:
        return locustfile_for(self.scenario)


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
    proc: ManagedProcess, url: str, timeout: float, stopped: Callable[[], bool], flag: str | None = None
) -> bool:
    """True once ``url`` answers 200; False if ``stopped()`` (Ctrl-C) first. Raises
    :class:`ChildError` with the cause from the child's log if it exits or the time runs out."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0) as client:
        while not stopped():
            code = proc.poll()
            if code is not None:
                raise _failure(proc, f"exited ({describe_exit(code)}) before it was ready", flag)
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return True
            if time.monotonic() > deadline:
                raise _failure(proc, f"did not answer {url} within {timeout:g} s; its last words", flag)
            time.sleep(0.05)
    return False


def run(config: UiConfig) -> int:
    """Start the stub, the app and Locust's web UI; block until Ctrl-C or Locust exits."""
    locustfile = config.locustfile
    check_ports(config)
    run_dir = new_run_dir(config.profiles_dir, "ui")
    print(f"loadlab: logs in {run_dir}/ ({LOCUST_LOG}, {SERVER_LOG}, {UPSTREAM_LOG})", flush=True)
    # Ctrl-C must stop the children in order (Locust first, while the app still answers its last
    # poll), not raise wherever the main thread happens to be.
    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    def stopped() -> bool:
        return interrupted

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # Exited in reverse: Locust, then the app, then the stub.
        with contextlib.ExitStack() as children:
            stub_port = free_port()
            stub_url = f"http://{LOOPBACK}:{stub_port}"
            stub = ManagedProcess(
                uvicorn_argv(UPSTREAM_APP, port=stub_port), name="upstream stub", log_path=run_dir / UPSTREAM_LOG
            )
            children.enter_context(stub)
            if not wait_until_ready(stub, stub_url + HEALTH_PATH, SERVER_READY_S, stopped):
                return _interrupted(run_dir)

            app_port = config.app_port or free_port()
            base_url = f"http://{LOOPBACK}:{app_port}"
            app = ManagedProcess(
                uvicorn_argv(config.app, port=app_port),
                name="target app",
                env=app_env(stub_url),
                log_path=run_dir / SERVER_LOG,
            )
            children.enter_context(app)
            if not wait_until_ready(app, base_url + HEALTH_PATH, SERVER_READY_S, stopped, APP_PORT_FLAG[0]):
                return _interrupted(run_dir)

            argv = locust_web_argv(locustfile, base_url, web_port=config.web_port, extra=config.locust_args)
            locust = ManagedProcess(argv, name="Locust", log_path=run_dir / LOCUST_LOG)
            children.enter_context(locust)
            web_url = f"http://{LOOPBACK}:{config.web_port}"
            if not wait_until_ready(locust, web_url + "/", LOCUST_READY_S, stopped, WEB_PORT_FLAG[0]):
                return _interrupted(run_dir)
            print(
                f"loadlab: {locustfile.name} against {base_url}\n"
                f"loadlab: Locust web UI at {web_url}  "
                "(tabs 'App internals' and 'Loop stalls' show the app's event loop)\n"
                "loadlab: Ctrl-C stops Locust, the app and the stub",
                flush=True,
            )
            while not interrupted and locust.poll() is None:
                for server in (app, stub):
                    code = server.poll()
                    if code is not None:
                        raise _failure(server, f"exited ({describe_exit(code)}) while Locust was running", None)
                time.sleep(0.2)
            if not interrupted:
                print(
                    f"loadlab: Locust exited ({describe_exit(locust.poll())}); its last output:\n{locust.tail()}\n"
                    f"loadlab: full log: {locust.log_path}",
                    file=sys.stderr,
                )
                return 1
        print(f"loadlab: stopped; logs in {run_dir}/", flush=True)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupted(run_dir: Path) -> int:
    print(f"loadlab: interrupted before the web UI was ready; stopped. Logs in {run_dir}/", file=sys.stderr)
    return 130


def _port(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
        if not low <= value <= 65535:
            raise argparse.ArgumentTypeError(f"{value} is not a port number ({low}-65535)")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadlab ui", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default=os.environ.get("SCENARIO") or DEFAULT_SCENARIO)
    # String defaults go through type= too: a bad LOCUST_WEB_PORT or PORT is an argparse error.
    parser.add_argument("--web-port", type=_port(1), default=os.environ.get("LOCUST_WEB_PORT") or "8089")
    parser.add_argument("--app-port", type=_port(0), default=os.environ.get("PORT") or "8000", help="0: any free port")
    parser.add_argument(
        "--profiles-dir",
        type=Path,
        default=os.environ.get("LOADLAB_PROFILES_DIR") or "profiles",
        help="the logs go to a new <profiles-dir>/<timestamp>-ui/ (env LOADLAB_PROFILES_DIR)",
    )
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="after --: passed to Locust")
    args = parser.parse_args(argv)
    extra = tuple(a for a in args.locust_args if a != "--")
    try:
        config = UiConfig(
            args.scenario, args.web_port, args.app_port, locust_args=extra, profiles_dir=args.profiles_dir
        )
        return run(config)
    except (ScenarioError, PortError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ChildError, ProcessError, RunFolderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
