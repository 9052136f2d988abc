"""``loadlab smoke``: short headless load runs judged against budgets, for CI; names the culprit.

    loadlab smoke --app mypkg.main:app --locustfile locustfile.py [--tags T] [--users N]
                  [--duration S] [--repeats N] [--profile] [--junit-xml PATH] [budgets]
    loadlab smoke [--variant healthy|blocking]          # the demo app's suites (``make smoke``)

With ``--app``, each run is a ``loadlab profile`` run (the app wrapped by loadlab's instrumentation,
py-spy only with ``--profile``) into its own folder with its ``run.json``, judged from what it
recorded: Locust's percentiles and failures, the app's loop lag and busy share. Without it the
demo app's suites run as before, each step its own Locust process (Locust is never imported here:
it would monkey-patch this process with gevent), judged by the Locust-side gates
(``loadtests/thresholds.py``), their verdict in ``<step>/thresholds.json``.

Budgets: ``--p95-ms``, ``--p99-ms``, ``--endpoint-budgets``, ``--fail-ratio``,
``--loop-lag-p99-ms``, ``--loop-busy-max``; each also a ``LOADLAB_*`` env var and a key of
``[tool.loadlab.smoke]`` in ``pyproject.toml``: a flag wins over the env, the env over the file
(see :mod:`loadlab.gates`). When a budget breaks, the output names what blocked the event loop:
the app's stall records and loop samples, and py-spy's blockers with ``--profile``. The verdict
goes to the terminal, ``<run>/smoke.md`` (for ``$GITHUB_STEP_SUMMARY``), ``<run>/smoke.json``
and, with ``--junit-xml``, a JUnit file with one test case per budget.

Exit code: 0 all budgets held, 1 a budget broke, 3 a run was invalid (generator overloaded, or
no request made), 2 the smoke itself could not run (a bad setting, an app that does not start).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from loadlab.analysis.culprits import Culprit, culprits_of, sampler_culprits, stall_culprits
from loadlab.budgets import BudgetError
from loadlab.config import DEMO_APP, ConfigError, ProfileConfig, loadlab_env
from loadlab.gates import (
    APP_DEFAULTS,
    SETTINGS,
    ResolvedBudgets,
    SmokeOutcome,
    StepOutcome,
    as_checks,
    combine,
    exit_code_of,
    judge_run,
    resolve_budgets,
)
from loadlab.instrument import LOOP_SAMPLE_ENV
from loadlab.processes import ManagedProcess, ProcessError, locust_argv, upstream_stub, uvicorn_server
from loadlab.progress import Progress
from loadlab.render import gate as render
from loadlab.results import RunFolderError, RunRecord, load_run, new_run_dir

DEMO_DEFAULTS: Mapping[str, str] = {
    **APP_DEFAULTS,
    "endpoint_budgets": "/health (canary):p95=100,p99=200",
}
"""Generous for a 2-core CI machine: a healthy 50 ms route stays far below, a blocked loop far above."""
SMOKE_SAMPLE_HZ = "100"  # the app's loop sampler names what held the loop, without py-spy


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


def locust_command(step: Step, host: str, folder: Path) -> list[str]:
    from loadlab.locust_ui import locustfile_for

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


def smoke_env(budgets: ResolvedBudgets, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of each Locust run: the resolved budgets, and only those."""
    env = dict(os.environ if base is None else base)
    for s in SETTINGS:
        env.pop(s.env, None)  # a budget turned off (an empty value) is off for Locust too
    env.update(budgets.env())
    env.pop("LOADLAB_THRESHOLDS_OUT", None)  # each step writes its own
    return env


def _samples_since(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> dict[str, Any]:
    """The loop sampler's counts taken between two ``/debug/samples`` snapshots of one server."""
    old = {(s["function"], s["file"], s["line"], s["route"]): s for s in (before or {}).get("samples", [])}
    samples = []
    for s in after.get("samples", []):
        prev = old.get((s["function"], s["file"], s["line"], s["route"]), {})
        samples.append({**s, **{k: int(s.get(k) or 0) - int(prev.get(k) or 0) for k in ("cpu", "wait", "gil")}})
    ticks = int(after.get("ticks") or 0) - int((before or {}).get("ticks") or 0)
    return {**after, "ticks": ticks, "samples": samples}


def _debug(client: httpx.Client, url: str) -> dict[str, Any] | None:
    with contextlib.suppress(httpx.HTTPError, ValueError):
        r = client.get(url)
        if r.status_code == 200:
            data: dict[str, Any] = r.json()
            return data
    return None


def run_demo(variant: str, run_dir: Path, budgets: ResolvedBudgets, app: str = DEMO_APP) -> SmokeOutcome:
    """Run the demo suite ``variant`` into ``run_dir`` on one server; judge each step."""
    from loadlab.locust_ui import app_env

    steps = SUITES[variant]
    run_dir.mkdir(parents=True, exist_ok=True)
    env = smoke_env(budgets)
    outcomes: list[StepOutcome] = []
    started = time.monotonic()
    with upstream_stub(log_path=run_dir / "upstream.log") as (_, upstream_url):
        app_environment = app_env(upstream_url)
        app_environment.setdefault("LOADLAB_DATA_DIR", str(run_dir / "app-data"))
        app_environment.setdefault(LOOP_SAMPLE_ENV, SMOKE_SAMPLE_HZ)
        with (
            uvicorn_server(app, env=app_environment, log_path=run_dir / "app.log", name="target app") as (_, host),
            httpx.Client(timeout=5.0) as client,
        ):
            samples = _debug(client, f"{host}/debug/samples")
            for step in steps:
                since = time.time()
                result = run_step(step, host, run_dir / step.name, env)
                stalls = (_debug(client, f"{host}/debug/stalls") or {}).get("stalls", [])
                now = _debug(client, f"{host}/debug/samples") or {}
                culprits = stall_culprits(stalls, since) + sampler_culprits(_samples_since(samples, now))
                samples = now
                outcomes.append(_demo_outcome(result, culprits))
                print(render.terminal(_alone(outcomes[-1], budgets)), flush=True)
    exit_code = exit_code_of([o.exit_code for o in outcomes])
    notes: tuple[str, ...] = ()
    if "loop_busy_max" in budgets.values:
        notes = ("--loop-busy-max is judged with --app only: the demo's gates run inside Locust",)
    seconds = round(time.monotonic() - started, 1)
    return SmokeOutcome(f"demo {variant}", tuple(outcomes), budgets, exit_code, seconds, notes)


def _demo_outcome(result: StepResult, culprits: list[Culprit]) -> StepOutcome:
    verdict = as_checks(result.verdict) if result.verdict is not None else None
    error = None
    if verdict is None:
        error = f"no verdict written (Locust exited {result.exit_code}; see {result.folder / 'locust.log'})"
    return StepOutcome(result.step.name, result.folder, result.exit_code, verdict, tuple(culprits), error)


def _alone(step: StepOutcome, budgets: ResolvedBudgets) -> SmokeOutcome:
    return SmokeOutcome(step.name, (step,), budgets, step.exit_code, 0.0)


@contextlib.contextmanager
def _env_default(key: str, value: str) -> Iterator[None]:
    """``os.environ[key]`` set to ``value`` unless already set, for the runs started meanwhile."""
    had = key in os.environ
    os.environ.setdefault(key, value)
    try:
        yield
    finally:
        if not had:
            os.environ.pop(key, None)


def run_app(
    cfg: ProfileConfig,
    run_dir: Path,
    budgets: ResolvedBudgets,
    repeats: int,
    progress: Progress,
    baseline: ProfileConfig | None = None,
) -> SmokeOutcome:
    """``repeats`` runs of the app, each on a fresh server into its own folder, judged by the
    medians of their figures. With ``baseline`` (another app), its runs are interleaved with the
    app's — A B B A A B…, so a machine that slows down or speeds up during the job weighs on both
    sides alike — into ``baseline/`` and ``current/``."""
    started = time.monotonic()
    sides = {"current": cfg} if baseline is None else {"baseline": baseline, "current": cfg}
    single = repeats == 1 and baseline is None
    suites: dict[str, RunRecord] = {}
    if not single:
        for side, side_cfg in sides.items():
            side_dir = run_dir if baseline is None else run_dir / side
            side_dir.mkdir(parents=True, exist_ok=True)
            data = {"variants": [], "status": "incomplete", "smoke_side": side}
            suites[side] = RunRecord.create(side_dir, "suite", side_cfg.to_dict(), loadlab_env(), **data)
    outcomes: dict[str, list[StepOutcome]] = {side: [] for side in sides}
    with _env_default(LOOP_SAMPLE_ENV, SMOKE_SAMPLE_HZ):
        for i in range(1, repeats + 1):
            for side in list(sides) if i % 2 else list(reversed(sides)):
                folder = run_dir if single else suites[side].dir / f"run-{i}"
                if baseline is not None:
                    progress.note(f"— {side} ({sides[side].app}), run {i} of {repeats}")
                outcomes[side].append(smoke_once(sides[side], folder, budgets, progress))
                if side in suites:
                    suites[side].data["variants"].append({"name": folder.name, "dir": folder.name})
                    suites[side].save()
    for suite in suites.values():
        suite.data["status"] = "complete"
        suite.save()
    notes = [f"baseline {o.name}: {render.status(o.exit_code)}" for o in outcomes.get("baseline", [])]
    steps = _judged(outcomes["current"], run_dir)
    if len(outcomes["current"]) > 1:
        notes += [f"{o.name}: {render.status(o.exit_code)}" for o in outcomes["current"]]
    code = exit_code_of([s.exit_code for s in steps])
    if any(s.exit_code == 2 for s in steps):
        code = 2
    return SmokeOutcome(cfg.app, steps, budgets, code, round(time.monotonic() - started, 1), tuple(notes))


def _judged(outcomes: list[StepOutcome], run_dir: Path) -> tuple[StepOutcome, ...]:
    """One run as it is; repeats as one step judged on the medians (if every run was judged)."""
    if len(outcomes) == 1 or any(o.verdict is None for o in outcomes):
        return tuple(outcomes)
    verdict = combine([o.verdict for o in outcomes if o.verdict is not None])
    worst = max(outcomes, key=lambda o: (o.exit_code != 0, len(o.culprits)))
    name = f"median of {len(outcomes)} runs"
    return (StepOutcome(name, run_dir, verdict.exit_code, verdict, worst.culprits),)


def smoke_once(cfg: ProfileConfig, folder: Path, budgets: ResolvedBudgets, progress: Progress) -> StepOutcome:
    """One ``loadlab profile`` run of the app into ``folder``, judged from its ``run.json``."""
    from loadlab.runner import RunFailed, run_once

    folder.mkdir(parents=True, exist_ok=True)
    try:
        run_once(cfg, folder, progress)
    except (RunFailed, ProcessError) as exc:
        return StepOutcome(folder.name, folder, 2, None, (), str(exc).splitlines()[0])
    data = load_run(folder)
    verdict = judge_run(data, budgets.budgets)
    (folder / "smoke-verdict.json").write_text(json.dumps(verdict.to_json(), indent=2) + "\n")
    return StepOutcome(folder.name, folder, verdict.exit_code, verdict, tuple(culprits_of(data)))


def write_outputs(outcome: SmokeOutcome, run_dir: Path, junit: Path | None) -> None:
    """``smoke.json``, ``smoke.md`` and the JUnit file (if asked for)."""
    (run_dir / "smoke.json").write_text(json.dumps(outcome.to_json(), indent=2) + "\n")
    (run_dir / "smoke.md").write_text(render.markdown(outcome, run_dir), encoding="utf-8")
    if junit is not None:
        junit.parent.mkdir(parents=True, exist_ok=True)
        junit.write_text(render.junit_xml(outcome), encoding="utf-8")


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(t for t in (value or "").replace(",", " ").split() if t)


def parser() -> argparse.ArgumentParser:
    about = "Short headless load runs judged against budgets, for CI; when one breaks, what blocked the loop."
    p = argparse.ArgumentParser(prog="loadlab smoke", description=about)
    env = os.environ.get
    what = p.add_argument_group("what to load (with --app; without it, the demo app's suites)")
    what.add_argument("--app", default=env("LOADLAB_APP"), help="your ASGI app, MODULE:ATTR (env LOADLAB_APP)")
    what.add_argument("--factory", action="store_true", default=env("LOADLAB_FACTORY") == "1")
    what.add_argument("--locustfile", type=Path, default=env("LOADLAB_LOCUSTFILE"), help="needed with --app")
    what.add_argument("--tags", "-T", default=env("LOADLAB_TAGS"), help="Locust tags (e.g. checkout,search)")
    # String defaults go through ``type`` too: a bad env value is a usage error, not a traceback.
    what.add_argument("--users", "-u", type=int, default=env("LOADLAB_USERS") or "10")
    what.add_argument("--duration", "-t", type=float, default=env("LOADLAB_DURATION") or "8", help="seconds")
    what.add_argument("--repeats", type=int, default=env("LOADLAB_REPEATS") or "1",
                      help="runs of the app, each on a fresh server; budgets judge their medians")  # fmt: skip
    what.add_argument("--profile", action="store_true", help="record py-spy too (off by default)")
    gate = p.add_argument_group("baseline gate (see loadlab compare --fail-on)")
    gate.add_argument("--baseline-app", default=None, help="another app (MODULE:ATTR) run interleaved with --app")
    gate.add_argument("--baseline", type=Path, default=None, help="a stored smoke run folder to compare against")
    gate.add_argument("--fail-on", default=env("LOADLAB_FAIL_ON"), help="rules, e.g. 'rps:-10%%,p95:+20%%'")
    what.add_argument("--variant", choices=sorted(SUITES), default=env("SMOKE_VARIANT", "healthy"),
                      help="the demo's suite, without --app")  # fmt: skip
    budgets = p.add_argument_group("budgets (flag > LOADLAB_* env > pyproject.toml [tool.loadlab.smoke] > default)")
    for s in SETTINGS:
        budgets.add_argument(s.flag, dest=s.key, default=None, metavar="VALUE", help=f"{s.what} (env {s.env})")
    budgets.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"), help="where budgets may live")
    out = p.add_argument_group("outputs")
    out.add_argument("--out", type=Path, default=Path("profiles"), help="parent folder of the run folder")
    out.add_argument("--run", default=None, help="run folder name (default: smoke-<name>-<timestamp>)")
    out.add_argument("--junit-xml", type=Path, default=None, help="write a JUnit XML file, one test case per budget")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress lines")
    return p


def app_config(args: argparse.Namespace, budgets: ResolvedBudgets, profiles_dir: Path) -> ProfileConfig:
    if args.locustfile is None:
        raise ConfigError("--locustfile is needed with --app: the locustfile that loads your app")
    if not 1 <= args.repeats <= 50:
        raise ConfigError(f"--repeats must be from 1 to 50; got {args.repeats}")
    fail_ratio = budgets.budgets.fail_ratio
    return ProfileConfig(
        app=args.app, factory=args.factory, locustfile=args.locustfile, tags=_split(args.tags),
        users=args.users, spawn_rate=float(args.users), duration=args.duration, profile=args.profile,
        profiles_dir=profiles_dir, fail_ratio=0.01 if fail_ratio is None else fail_ratio,
    ).validated()  # fmt: skip


def _check_gate(args: argparse.Namespace) -> None:
    from loadlab.analysis.regress import parse_rules

    if (args.baseline_app or args.baseline) and args.app is None:
        raise ConfigError("--baseline-app and --baseline need --app")
    if args.baseline_app and args.baseline:
        raise ConfigError("--baseline-app runs a baseline, --baseline reads one: give one of them")
    if args.fail_on is not None:
        if not (args.baseline_app or args.baseline):
            raise ConfigError("--fail-on needs a baseline: --baseline-app MODULE:ATTR or --baseline RUN_FOLDER")
        parse_rules(args.fail_on)
    if args.baseline is not None and not (args.baseline / "run.json").is_file():
        raise ConfigError(f"--baseline {args.baseline}: no run.json there (a folder written by loadlab smoke)")


def _gate(args: argparse.Namespace, run_dir: Path, outcome: SmokeOutcome) -> SmokeOutcome:
    """The baseline gate after the runs, into ``run_dir/baseline-gate``, its lines printed; a
    regression makes a passed smoke fail (exit 1)."""
    from loadlab.baseline import summary_lines, write_gate

    baseline, current = (run_dir / "baseline", run_dir / "current") if args.baseline_app else (args.baseline, run_dir)
    if args.fail_on is None or any(s.verdict is None for s in outcome.steps):
        return outcome
    result = write_gate(baseline, current, args.fail_on, run_dir / "baseline-gate")
    print("\n".join(summary_lines(result)), flush=True)
    code = 1 if result["regressed"] and outcome.exit_code == 0 else outcome.exit_code
    return replace(outcome, gate=result, exit_code=code)


def main(argv: Sequence[str] | None = None) -> int:
    from loadlab.analysis.regress import RuleError

    args = parser().parse_args(argv)
    try:
        defaults = DEMO_DEFAULTS if args.app is None else APP_DEFAULTS
        flags = {s.key: getattr(args, s.key) for s in SETTINGS}
        budgets = resolve_budgets(flags, os.environ, args.pyproject, defaults)
        _check_gate(args)
        cfg = app_config(args, budgets, args.out) if args.app is not None else None
        base_cfg = replace(cfg, app=args.baseline_app).validated() if cfg and args.baseline_app else None
    except (BudgetError, ConfigError, RuleError) as exc:
        print(f"smoke: {exc}", file=sys.stderr)
        return 2
    label = args.variant if cfg is None else cfg.resolved_locustfile.stem
    name = args.run or f"smoke-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        run_dir = new_run_dir(args.out, name, args.out / name)
        if cfg is None:
            outcome = run_demo(args.variant, run_dir, budgets)
            for note in outcome.notes:
                print(f"note: {note}", flush=True)
        else:
            outcome = run_app(cfg, run_dir, budgets, args.repeats, Progress(quiet=args.quiet), base_cfg)
            print(render.terminal(outcome), flush=True)
            outcome = _gate(args, run_dir, outcome)
        write_outputs(outcome, run_dir, args.junit_xml)
    except (ProcessError, RunFolderError) as exc:
        print(f"smoke: could not run: {exc}", file=sys.stderr)
        return 2
    except (ValueError, OSError, KeyError) as exc:  # a --baseline folder this loadlab cannot read
        print(f"smoke: the baseline gate could not read {args.baseline}: {exc}", file=sys.stderr)
        return 2
    verdict = "PASSED" if outcome.passed else render.status(outcome.exit_code)
    print(f"smoke {label}: {verdict} in {outcome.seconds} s; outputs in {run_dir}", flush=True)
    if args.junit_xml is not None:
        print(f"JUnit XML: {args.junit_xml}", flush=True)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
