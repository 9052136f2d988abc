"""What every loadlab locustfile shares: host, parameters, the base user and the canary.

Importing this module also switches on the rest of the kit, so any run of our locustfiles has it:
the load shapes (:mod:`loadtests.shapes`), the budgets (:mod:`loadtests.thresholds`), the poller
of the app's inner state (:mod:`loadtests.appstate`) and the web UI tab (:mod:`loadtests.webui`).

Parameters are Locust custom arguments, each also an env var, and editable in the web UI form:
``--ms`` (``LOADLAB_MS``), ``--work``, ``--rows``, ``--kb``, ``--chunks``, ``--wait-ms``,
``--canary-rps``. The host is Locust's ``-H`` or ``LOADLAB_HOST`` (default http://127.0.0.1:8000).
"""

from __future__ import annotations

from typing import Any

from locust import FastHttpUser, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

from loadtests import appstate, shapes, thresholds, webui  # noqa: F401  (they register listeners)
from loadtests._host import default_host

CANARY_NAME = "/health (canary)"
"""The canary's row in every run: collateral damage on a route that does nothing."""

PARAMETERS: dict[str, tuple[int, str]] = {
    "ms": (50, "milliseconds each /io, /deps, /upstream, /background request waits"),
    "work": (20, "units of CPU work (~1 ms each) per /cpu request"),
    "rows": (500, "rows per /db query (~0.08 ms each)"),
    "kb": (256, "KiB read per /files request"),
    "chunks": (5, "chunks per /stream response, --ms apart"),
    "wait_ms": (0, "think time of each user between two requests, in ms (0: back to back)"),
}


@events.init_command_line_parser.add_listener
def _add_arguments(parser: LocustArgumentParser, **_: Any) -> None:
    for name, (default, help_text) in PARAMETERS.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=default,
            env_var=f"LOADLAB_{name.upper()}",
            help=f"loadlab: {help_text} (default {default})",
        )
    parser.add_argument(
        "--canary-rps",
        type=float,
        default=2.0,
        env_var="LOADLAB_CANARY_RPS",
        help="loadlab: requests/s of the single canary user on /health (default 2)",
    )


def param(environment: Environment, name: str) -> int:
    """A scenario parameter as the run sees it now (the web UI may change it between runs)."""
    options = environment.parsed_options
    value = getattr(options, name, None) if options is not None else None
    return int(value) if value is not None else PARAMETERS[name][0]


class LoadlabUser(FastHttpUser):
    """Base of every scenario user: closed model by default, open model with ``--arrival-rate``."""

    abstract = True
    host = default_host()

    def on_start(self) -> None:
        self.schedule = shapes.ArrivalSchedule()
        self.schedule.start()

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        rate = float(getattr(options, "arrival_rate", 0.0) or 0.0)
        if rate > 0:
            return self.schedule.wait(rate, shapes.loadlab_users(self.environment))
        return param(self.environment, "wait_ms") / 1000

    def context(self) -> dict[str, Any]:
        options = self.environment.parsed_options
        if float(getattr(options, "arrival_rate", 0.0) or 0.0) > 0 and self.schedule.intended is not None:
            return {shapes.INTENDED_START: self.schedule.intended}
        return {}

    def hit(self, path: str, **query: int) -> None:
        """GET ``path`` with ``query``, grouped under the path alone so each variant is one row."""
        self.client.get(path, params=query or None, name=path)


class CanaryUser(FastHttpUser):
    """One user, whatever ``-u`` says, asking ``/health`` at ``--canary-rps``.

    ``/health`` does nothing, so its latency is pure waiting for the event loop: when it climbs,
    something else in the process is blocking the loop. Drop it with ``-E canary``.
    """

    fixed_count = 1
    host = default_host()

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        rate = float(getattr(options, "canary_rps", 2.0) or 2.0)
        return 1.0 / rate

    @task
    def health(self) -> None:
        self.client.get("/health", name=CANARY_NAME)


@events.init.add_listener
def _keep_the_canary_under_tags(environment: Environment, **_: Any) -> None:
    # Locust's -T keeps only tasks carrying one of the tags; the canary must survive any -T
    # (it is the point of comparison), so it carries exactly the tags asked for, plus "canary".
    options = environment.parsed_options
    asked = set(getattr(options, "tags", None) or [])
    CanaryUser.health.locust_tag_set = {"canary", *asked}  # type: ignore[attr-defined]
