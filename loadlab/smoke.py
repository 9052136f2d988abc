"""``make smoke``: short headless Locust runs with pass/fail budgets, for CI.

    loadlab smoke [--variant healthy|blocking] [--out profiles] [--run NAME]

Starts the upstream stub and the target app, then runs each step of the suite as its own
Locust process (Locust is never imported here: it would monkey-patch this process with gevent).
Every step keeps Locust's ``--csv``, ``--html`` and ``--json`` outputs, its log and its verdict
(``thresholds.json``) under ``profiles/<run>/<step>/``; ``profiles/<run>/smoke.json`` sums up.

The healthy suite passes on a sound app; ``--variant blocking`` runs the same gates against the
routes that block the event loop, and fails — which is what CI must see if someone writes
``time.sleep`` in an ``async def``. Budgets come from ``LOADLAB_*`` env vars when set (see
``loadtests/thresholds.py``), else from :data:`DEFAULT_BUDGETS`.

Exit code: 0 all steps passed, 1 a budget broke, 3 a run was invalid (generator overloaded),
2 the smoke itself could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from loadlab.config import DEMO_APP
from loadlab.locust_ui import app_env, locustfile_for
from loadlab.processes import ManagedProcess, ProcessError, locust_argv, upstream_stub, uvicorn_server

DEFAULT_BUDGETS: Mapping[str, str] = {
    "LOADLAB_P95_MS": "300",
    "LOADLAB_P99_MS": "600",
    "LOADLAB_ENDPOINT_BUDGETS": "/health (canary):p95=100,p99=200",
    "LOADLAB_FAIL_RATIO": "0.01",
    "LOADLAB_LOOP_LAG_P99_MS": "25",
}
"""Generous for a 2-core CI machine: a healthy 50 ms route stays far below, a blocked loop far above."""


@dataclass(frozen=True)
class Step:
    """One headless Locust run: a scenario, the variants it keeps (``-T``), users and duration."""

    name: str
    scenario: str
    tags: tuple[str, ...]
    users: int
    run_time: str


SUITES: Mapping[str, tuple[Step, ...]] = {
    "healthy": (
        Step("io", "io", ("healthy",), users=21, run_time="8s"),
        Step("deps", "deps", ("async", "sync", "mixed"), users=11, run_time="6s"),
        Step("db", "db", ("healthy",), users=5, run_time="6s"),
    ),
    "blocking": (Step("io-blocking", "io", ("blocking",), users=11, run_time="8s"),),
}


@dataclass(frozen=True)
class StepResult:
    step: Step
    exit_code: int
    verdict: dict[str, object] | None
    folder: Path

    @property
    def broken(self) -> list[str]:
        if self.verdict is None:
            return [f"no verdict written (Locust exited {self.exit_code}; see {self.folder / 'locust.log'})"]
        checks = self.verdict.get("checks", [])
        assert isinstance(checks, list)
        return [f"{c['name']}: measured {c['measured']}, budget {c['budget']}" for c in checks if not c["passed"]]


def locust_command(step: Step, host: str, folder: Path) -> list[str]:
    seconds = float(step.run_time.rstrip("s"))
    return locust_argv(
        locustfile_for(step.scenario), host, users=step.users, spawn_rate=max(step.users, 10), run_time_s=seconds,
        outputs=folder, tags=step.tags, stop_timeout_s=5,
        extra=["--thresholds-out", str(folder / "thresholds.json")],
    )  # fmt: skip


def run_step(step: Step, host: str, folder: Path, env: Mapping[str, str]) -> StepResult:
    folder.mkdir(parents=True, exist_ok=True)
    seconds = float(step.run_time.rstrip("s"))
    with ManagedProcess(
        locust_command(step, host, folder),
        name=f"locust {step.name}",
        env=env,
        log_path=folder / "locust.log",
    ) as locust:
        assert locust.popen is not None
        try:
            code = locust.popen.wait(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            code = -1
    out = folder / "thresholds.json"
    verdict = json.loads(out.read_text()) if out.is_file() else None
    return StepResult(step, code, verdict, folder)


def smoke_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of each Locust run: our default budgets unless the caller set their own."""
    env = dict(os.environ if base is None else base)
    for key, value in DEFAULT_BUDGETS.items():
        env.setdefault(key, value)
    env.pop("LOADLAB_THRESHOLDS_OUT", None)  # each step writes its own
    return env


def run(variant: str, run_dir: Path, app: str = DEMO_APP) -> int:
    """Run the suite ``variant`` into ``run_dir``; print one line per step; return the exit code."""
    steps = SUITES[variant]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = smoke_env()
    results: list[StepResult] = []
    started = time.monotonic()
    with upstream_stub(log_path=run_dir / "upstream.log") as (_, upstream_url):
        app_environment = app_env(upstream_url)
        app_environment.setdefault("LOADLAB_DATA_DIR", str(run_dir / "app-data"))
        with uvicorn_server(app, env=app_environment, log_path=run_dir / "app.log", name="target app") as (
            _,
            host,
        ):
            for step in steps:
                result = run_step(step, host, run_dir / step.name, env)
                results.append(result)
                status = "passed" if result.exit_code == 0 else f"FAILED (exit {result.exit_code})"
                print(f"smoke {step.name}: {status}", flush=True)
                for line in result.broken:
                    print(f"  broken budget: {line}", flush=True)
    codes = [r.exit_code for r in results]
    exit_code = 0 if all(c == 0 for c in codes) else (3 if 3 in codes else 1)
    summary = {
        "variant": variant,
        "passed": exit_code == 0,
        "exit_code": exit_code,
        "seconds": round(time.monotonic() - started, 1),
        "steps": [
            {"name": r.step.name, "exit_code": r.exit_code, "folder": r.folder.name, "verdict": r.verdict}
            for r in results
        ],
    }
    (run_dir / "smoke.json").write_text(json.dumps(summary, indent=2) + "\n")
    verdict = "PASSED" if exit_code == 0 else "FAILED"
    print(f"smoke {variant}: {verdict} in {summary['seconds']} s; outputs in {run_dir}", flush=True)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadlab smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", choices=sorted(SUITES), default=os.environ.get("SMOKE_VARIANT", "healthy"))
    parser.add_argument("--out", type=Path, default=Path("profiles"), help="parent folder of the run folder")
    parser.add_argument("--run", default=None, help="run folder name (default: smoke-<variant>-<timestamp>)")
    args = parser.parse_args(argv)
    name = args.run or f"smoke-{args.variant}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        return run(args.variant, args.out / name)
    except ProcessError as exc:
        print(f"smoke: could not run: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
