"""``make locust``: the target app, its upstream stub and Locust's web UI, stopped together on Ctrl-C.

    python -m loadlab.locust_ui [--scenario io] [--web-port 8089] [--app-port 8000] [-- LOCUST ARGS]

``SCENARIO`` (env) or ``--scenario`` picks ``loadtests/<scenario>_routes.py`` (or any locustfile
path); arguments after ``--`` go to Locust unchanged (``-- -T blocking --arrival-rate 200``).
Locust runs as a child process: importing it here would monkey-patch this process with gevent.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadlab.processes import (
    LOOPBACK,
    ManagedProcess,
    ProcessError,
    upstream_stub,
    uvicorn_server,
    wait_ready,
)

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"
DEFAULT_SCENARIO = "io"


class ScenarioError(ValueError):
    """The scenario names no locustfile; the message lists the ones there are."""


def scenarios() -> list[str]:
    """The scenario names: one per ``loadtests/<name>_routes.py``."""
    return sorted(p.name.removesuffix("_routes.py") for p in LOADTESTS.glob("*_routes.py"))


def locustfile_for(scenario: str) -> Path:
    """``io`` → ``loadtests/io_routes.py``; a path to an existing file is taken as it is."""
    as_path = Path(scenario)
    if as_path.suffix == ".py" and as_path.is_file():
        return as_path.resolve()
    candidate = LOADTESTS / f"{scenario}_routes.py"
    if not candidate.is_file():
        raise ScenarioError(f"no scenario {scenario!r}; choose one of {', '.join(scenarios())} or a locustfile path")
    return candidate


@dataclass(frozen=True)
class UiConfig:
    scenario: str = DEFAULT_SCENARIO
    web_port: int = 8089
    app_port: int = 8000
    app: str = "target_app.main:app"
    locust_args: tuple[str, ...] = field(default_factory=tuple)

    @property
    def locustfile(self) -> Path:
        return locustfile_for(self.scenario)


def app_env(upstream_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["LOADLAB_UPSTREAM_URL"] = upstream_url
    return env


def locust_argv(locustfile: Path, host: str, extra: Sequence[str], *, web_port: int) -> list[str]:
    # Pre-fill the form with a load that shows something (Locust's default, 1 user, would be the
    # canary alone); flags given after -- come later and win.
    defaults = ["-u", "11", "-r", "10"]
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(locustfile),
        "-H",
        host,
        "--web-host",
        LOOPBACK,
        "--web-port",
        str(web_port),
        *defaults,
        *extra,
    ]


def run(config: UiConfig) -> int:
    """Start the stub, the app and Locust's web UI; block until Ctrl-C or Locust exits."""
    locustfile = config.locustfile
    # Ctrl-C must stop the children in order (Locust first, while the app still answers its last
    # poll), not raise wherever the main thread happens to be.
    interrupted = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal interrupted
        interrupted = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with upstream_stub() as (_, upstream_url):
            with uvicorn_server(config.app, port=config.app_port, env=app_env(upstream_url), name="target app") as (
                _,
                base_url,
            ):
                argv = locust_argv(locustfile, base_url, config.locust_args, web_port=config.web_port)
                with ManagedProcess(argv, name="locust", log_path=None) as locust:
                    wait_ready(locust, f"http://{LOOPBACK}:{config.web_port}/", timeout=60)
                    print(
                        f"loadlab: {locustfile.name} against {base_url}\n"
                        f"loadlab: Locust web UI at http://{LOOPBACK}:{config.web_port}  "
                        "(tabs 'App internals' and 'Loop stalls' show the app's event loop)\n"
                        "loadlab: Ctrl-C stops Locust, the app and the stub",
                        flush=True,
                    )
                    while not interrupted and locust.poll() is None:
                        time.sleep(0.2)
                    if locust.poll() is not None and not interrupted:
                        print(f"loadlab: Locust exited ({locust.poll()}):\n{locust.tail()}", file=sys.stderr)
                        return 1
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadlab.locust_ui", description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default=os.environ.get("SCENARIO") or DEFAULT_SCENARIO)
    parser.add_argument("--web-port", type=int, default=int(os.environ.get("LOCUST_WEB_PORT", "8089")))
    parser.add_argument("--app-port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("locust_args", nargs=argparse.REMAINDER, help="after --: passed to Locust")
    args = parser.parse_args(argv)
    extra = tuple(a for a in args.locust_args if a != "--")
    try:
        config = UiConfig(args.scenario, args.web_port, args.app_port, locust_args=extra)
        return run(config)
    except (ScenarioError, ProcessError) as exc:
        print(f"loadlab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
