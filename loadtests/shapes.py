"""Load shapes, chosen from the command line: a step shape and a constant-arrival-rate mode.

``--shape step`` climbs through ``--step-users`` (default 10,40,80,120: past AnyIO's 40 threads),
holding each step ``--step-seconds``. The canary counts as one of the users.

``--arrival-rate R`` switches every loadlab user to an open-model schedule, as wrk2 does: the
users together send R requests per second on a fixed timetable, each request remembering when
it *should* have started. Latency is then reported twice: the ``GET`` row is measured from the
moment the request actually left, the ``corrected`` row from its intended start. When the server
stalls, a user is still waiting for its previous answer while its next request falls due; the
measured row hides that wait (coordinated omission), the corrected row counts it. Give it enough
users (``-u`` at least R × the expected latency in seconds) or the corrected row grows without end.
"""

from __future__ import annotations

import random
import time
from typing import Any

from locust import LoadTestShape, events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment

INTENDED_START = "loadlab_intended_start"
CORRECTED = "corrected"
CANARY_CLASS = "CanaryUser"


@events.init_command_line_parser.add_listener
def _add_arguments(parser: LocustArgumentParser, **_: Any) -> None:
    parser.add_argument(
        "--shape",
        choices=["none", "step"],
        default="none",
        env_var="LOADLAB_SHAPE",
        help="loadlab: 'step' climbs through --step-users, holding each --step-seconds",
        include_in_web_ui=False,
    )
    parser.add_argument(
        "--step-users",
        default="10,40,80,120",
        env_var="LOADLAB_STEP_USERS",
        help="loadlab: user counts of the step shape, comma-separated (the canary is one of them)",
        include_in_web_ui=False,
    )
    parser.add_argument(
        "--step-seconds",
        type=float,
        default=15.0,
        env_var="LOADLAB_STEP_SECONDS",
        help="loadlab: how long the step shape holds each step",
        include_in_web_ui=False,
    )
    parser.add_argument(
        "--arrival-rate",
        type=float,
        default=0.0,
        env_var="LOADLAB_ARRIVAL_RATE",
        help="loadlab: open model, requests/s sent on a schedule by all users together (0: closed model)",
    )


def parse_steps(spec: str) -> list[int]:
    try:
        steps = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--step-users must be comma-separated integers, got {spec!r}") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"--step-users needs at least one step of 1 user or more, got {spec!r}")
    return steps


class StepShape(LoadTestShape):
    """Hold each user count for ``hold_s`` seconds, then stop."""

    abstract = True  # picked with --shape step, never automatically from a locustfile

    def __init__(self, steps: list[int], hold_s: float, spawn_rate: float = 50.0) -> None:
        super().__init__()
        self.steps, self.hold_s, self.spawn_rate = steps, hold_s, spawn_rate

    def tick(self) -> tuple[int, float] | None:
        index = int(self.get_run_time() // self.hold_s)
        if index >= len(self.steps):
            return None
        return self.steps[index], self.spawn_rate


@events.init.add_listener
def _choose_shape(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or getattr(options, "shape", "none") != "step":
        return
    shape = StepShape(parse_steps(options.step_users), options.step_seconds)
    shape.runner = environment.runner
    environment.shape_class = shape


class ArrivalSchedule:
    """One user's timetable in the open model: its share of the rate, on a fixed grid.

    Each user sends every ``active_users / rate`` seconds, so all of them together send ``rate``
    per second; the period is recomputed at every request, so it follows the user count.
    """

    def __init__(self) -> None:
        self.intended: float | None = None
        self._next: float | None = None

    def start(self) -> None:
        self.intended = self._next = time.time()

    def wait(self, rate: float, active_users: int) -> float:
        """Seconds until the next request falls due (0 when it is already late)."""
        period = max(active_users, 1) / rate
        now = time.time()
        if self._next is None:  # the first request: spread the users over one period
            self._next = now + random.uniform(0, period)
        else:
            self._next += period
        self.intended = self._next
        return max(0.0, self._next - now)


def loadlab_users(environment: Environment) -> int:
    """How many users (the canary excluded) share the arrival rate right now."""
    runner = environment.runner
    if runner is None:
        return 1
    counts = getattr(runner, "user_classes_count", {}) or {}
    return max(1, sum(n for cls, n in counts.items() if cls != CANARY_CLASS))


@events.init.add_listener
def _record_corrected_latency(environment: Environment, **_: Any) -> None:
    def on_request(
        name: str,
        response_time: float,
        response_length: int,
        context: dict[str, Any] | None = None,
        start_time: float | None = None,
        **__: Any,
    ) -> None:
        intended = (context or {}).get(INTENDED_START)
        if intended is None or start_time is None:
            return
        corrected = max(response_time, (start_time - intended) * 1000 + response_time)
        # Logged on the row alone, not on the "Aggregated" total, so totals count each request once.
        environment.stats.get(name, CORRECTED).log(corrected, response_length or 0)

    environment.events.request.add_listener(on_request)
