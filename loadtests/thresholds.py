"""Pass/fail budgets for a run, judged when Locust quits; the exit code says the verdict.

Configured by flags, each also an env var (CI sets env vars, a person types flags):

====================  ===========================  ==========================================
flag                  env var                      meaning
====================  ===========================  ==========================================
--p95-ms              LOADLAB_P95_MS               p95 budget of every row, in ms
--p99-ms              LOADLAB_P99_MS               p99 budget of every row, in ms
--endpoint-budgets    LOADLAB_ENDPOINT_BUDGETS     per-row overrides: "NAME:p95=120,p99=250;..."
--fail-ratio          LOADLAB_FAIL_RATIO           failed/total requests allowed (default 0.01)
--loop-lag-p99-ms     LOADLAB_LOOP_LAG_P99_MS      event-loop lag p99 budget, from /debug/loop
--max-generator-cpu   LOADLAB_MAX_GENERATOR_CPU    Locust's own CPU % above which the run is
                                                   invalid (default 90)
--thresholds-out      LOADLAB_THRESHOLDS_OUT       write the verdict as JSON to this path
====================  ===========================  ==========================================

Unset latency and lag budgets are not checked. The loop lag is the worst p99 the app reported
while the test ran (polled every second by :mod:`loadtests.appstate`) or at its end. The
generator's CPU is the larger of Locust's own reading (taken every 10 s, so absent from short
runs) and this process's average CPU over the test.

Exit codes: 0 passed, 1 a budget broke, 3 invalid run (the load generator was overloaded, or
no request was made). The JSON is ``{"passed", "valid", "checks": [{"name", "budget",
"measured", "passed", "unit"}]}``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import psutil
from locust import events
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import WorkerRunner

from loadlab.budgets import Budgets, GateVerdict, RowStats, evaluate, parse_endpoint_budgets
from loadtests import appstate

logger = logging.getLogger("loadlab.thresholds")


@events.init_command_line_parser.add_listener
def _add_arguments(parser: LocustArgumentParser, **_: Any) -> None:
    def flag(name: str, help_text: str, **kwargs: Any) -> None:
        env = "LOADLAB_" + name.upper().replace("-", "_")
        parser.add_argument(f"--{name}", env_var=env, help=f"loadlab: {help_text}", include_in_web_ui=False, **kwargs)

    flag("p95-ms", "p95 budget of every row, in ms (unset: not checked)", type=float, default=None)
    flag("p99-ms", "p99 budget of every row, in ms (unset: not checked)", type=float, default=None)
    flag("endpoint-budgets", "per-row budgets, 'NAME:p95=120,p99=250;NAME2:p99=400'", default="")
    flag("fail-ratio", "share of failed requests allowed (default 0.01)", type=float, default=0.01)
    flag("loop-lag-p99-ms", "event-loop lag p99 budget in ms, read from /debug/loop", type=float, default=None)
    flag(
        "max-generator-cpu",
        "Locust CPU %% above which the run is invalid (default 90)",
        type=float,
        default=90.0,
    )
    flag("thresholds-out", "write the verdict as JSON to this path", default="")


def budgets_from(options: Any) -> Budgets:
    return Budgets(
        p95_ms=options.p95_ms,
        p99_ms=options.p99_ms,
        fail_ratio=options.fail_ratio,
        loop_lag_p99_ms=options.loop_lag_p99_ms,
        max_generator_cpu=options.max_generator_cpu,
        endpoints=parse_endpoint_budgets(options.endpoint_budgets),
    )


class _CpuMeter:
    """Average CPU of this process over the test, and the highest of Locust's own readings."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.start_times: tuple[float, float] | None = None
        self.average = 0.0
        self.peak_locust = 0.0

    def start(self) -> None:
        cpu = self.process.cpu_times()
        self.start_times = (time.monotonic(), cpu.user + cpu.system)
        self.peak_locust = 0.0

    def stop(self) -> None:
        if self.start_times is None:
            return
        cpu = self.process.cpu_times()
        wall = time.monotonic() - self.start_times[0]
        if wall > 0.5:
            self.average = 100.0 * (cpu.user + cpu.system - self.start_times[1]) / wall

    def reading(self, environment: Environment) -> float:
        runner_cpu = float(getattr(environment.runner, "current_cpu_usage", 0.0) or 0.0)
        return max(self.average, self.peak_locust, runner_cpu)


_cpu = _CpuMeter()
_verdict: GateVerdict | None = None


@events.init.add_listener
def _validate(environment: Environment, **_: Any) -> None:
    # A typo in a budget must stop the run before it starts, not after it ends.
    if environment.parsed_options is not None:
        budgets_from(environment.parsed_options)


@events.test_start.add_listener
def _on_test_start(**_: Any) -> None:
    _cpu.start()


@events.usage_monitor.add_listener
def _on_usage(cpu_usage: float, **_: Any) -> None:
    _cpu.peak_locust = max(_cpu.peak_locust, cpu_usage)


@events.test_stop.add_listener
def _on_test_stop(**_: Any) -> None:
    _cpu.stop()


def rows_of(environment: Environment) -> list[RowStats]:
    return [
        RowStats(
            name=entry.name,
            method=entry.method or "",
            requests=entry.num_requests,
            failures=entry.num_failures,
            p95_ms=float(entry.get_response_time_percentile(0.95) or 0.0),
            p99_ms=float(entry.get_response_time_percentile(0.99) or 0.0),
        )
        for entry in sorted(environment.stats.entries.values(), key=lambda e: (e.name, e.method or ""))
    ]


def judge(environment: Environment) -> GateVerdict:
    """Evaluate the run's budgets now, from Locust's stats and the app's reported loop lag."""
    options = environment.parsed_options
    if appstate.state.judged_polls == 0:  # a run shorter than the settling time
        appstate.poll_once(environment, judged=True)
    lag = appstate.state.worst_lag_p99_ms if appstate.state.judged_polls else None
    return evaluate(
        budgets_from(options),
        rows_of(environment),
        loop_lag_p99_ms=lag,
        generator_cpu=_cpu.reading(environment),
    )


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    global _verdict
    if isinstance(environment.runner, WorkerRunner) or environment.parsed_options is None:
        return
    _verdict = judge(environment)
    environment.process_exit_code = _verdict.exit_code
    out = environment.parsed_options.thresholds_out
    if out:
        _verdict.write(out)
    for check in _verdict.broken:
        logger.error("budget broken: %s = %s, limit %s", check.name, check.measured, check.budget)


@events.quit.add_listener
def _on_quit(**_: Any) -> None:
    # After Locust's own tables, so the verdict is the last thing a CI log shows.
    if _verdict is not None:
        print("\n" + _verdict.table(), file=sys.stdout, flush=True)
