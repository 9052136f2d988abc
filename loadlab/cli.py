"""``loadlab`` — thin: parse flags (each also a ``LOADLAB_*`` env var), build the config, call the
library. Bad input exits with code 2 and one line naming the flag."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from loadlab import __version__
from loadlab.config import BOUNDS, DEMO_APP, SCENARIOS, ConfigError, ProfileConfig, check_bind, is_loopback
from loadlab.processes import ProcessError
from loadlab.progress import Progress
from loadlab.results import RunFolderError


def _split(value: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if not value:
        return ()
    items = value if isinstance(value, tuple) else (value,)
    return tuple(t for item in items for t in item.replace(",", " ").split() if t)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGTERM (CI cancelling a job) takes the same path as Ctrl-C: children stopped, data kept.
    # Further signals are ignored while the children are stopped (a bounded wait), so a second
    # Ctrl-C cannot leave a server behind; a crash of the harness itself is covered by the
    # children's parent-death signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("interrupted: stopping every child process…", file=sys.stderr, flush=True)
    raise KeyboardInterrupt


T = TypeVar("T")


def _int_range(flag: str) -> click.IntRange:
    lo, hi = BOUNDS[flag]
    return click.IntRange(int(lo), int(hi))


def _float_range(flag: str) -> click.FloatRange:
    return click.FloatRange(*BOUNDS[flag])


def _run_children(job: Callable[[], T]) -> T:
    """Run a job that starts child processes: signals stop them cleanly, failures are one line.

    Ctrl-C and SIGTERM exit 130 once every child is stopped; a bad setting is a usage error (2);
    a failed run or an unwritable folder is ``error: …`` (1).
    """
    from loadlab.runner import RunFailed

    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return job()
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("interrupted: every child process was stopped; what was gathered is in the run folder", err=True)
        sys.exit(130)
    except (RunFailed, ProcessError, RunFolderError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def _stored(job: Callable[[], T], where: Path | None = None) -> T:
    """Run a job over stored runs: a bad or missing file is ``error: …`` (1), nothing written.

    Readers check the documented keys when they load a file (naming the file and the key); a
    record that passes that yet lacks something deeper still gets one line, naming the folder.
    """
    try:
        return job()
    except (ValueError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        place = f"{where}: " if where else ""
        click.echo(f"error: {place}a stored file does not have the shape this loadlab reads ({exc!r})", err=True)
        sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="loadlab")
def main() -> None:
    """Load-test and profile ASGI apps; name what blocked the event loop."""


# The options `loadlab profile` and `loadlab ui` share: what to serve, how, and where runs go.
_TARGET_OPTIONS = (
    click.option(
        "--app",
        envvar="LOADLAB_APP",
        default=DEMO_APP,
        show_default=True,
        help="The ASGI app, MODULE:ATTR (imported like uvicorn does).",
    ),
    click.option("--factory", envvar="LOADLAB_FACTORY", is_flag=True, help="--app is a factory returning the app."),
    click.option(
        "--scenario",
        envvar="LOADLAB_SCENARIO",
        default="io",
        show_default=True,
        type=click.Choice(SCENARIOS),
        help="Route family of the demo app (loadtests/<scenario>_routes.py).",
    ),
    click.option(
        "--locustfile",
        envvar="LOADLAB_LOCUSTFILE",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Your own locustfile (default: the scenario's).",
    ),
    click.option("--tags", "-T", envvar="LOADLAB_TAGS", help="Locust tags for a single run (e.g. blocking)."),
    click.option(
        "--workers",
        envvar="LOADLAB_WORKERS",
        type=_int_range("--workers"),
        default=1,
        show_default=True,
        help="uvicorn worker processes.",
    ),
    click.option(
        "--server",
        envvar="LOADLAB_SERVER",
        type=click.Choice(["uvicorn", "gunicorn"]),
        default="uvicorn",
        show_default=True,
        help="Process manager: uvicorn --workers, or gunicorn with uvicorn-worker's worker class.",
    ),
    click.option(
        "--loop",
        envvar="LOADLAB_LOOP",
        type=click.Choice(["auto", "asyncio", "uvloop"]),
        default="auto",
        show_default=True,
        help="uvicorn's event loop.",
    ),
    click.option(
        "--rate",
        envvar="LOADLAB_RATE",
        type=_int_range("--rate"),
        default=100,
        show_default=True,
        help="py-spy samples per second.",
    ),
    click.option(
        "--native/--no-native",
        envvar="LOADLAB_NATIVE",
        default=False,
        show_default=True,
        help=(
            "Record native frames: shows the C call a thread waits in; "
            "costs up to ~40% throughput on thread-heavy apps."
        ),
    ),
    click.option(
        "--nonblocking",
        envvar="LOADLAB_NONBLOCKING",
        is_flag=True,
        help="py-spy does not pause the app to sample (cheaper, less exact).",
    ),
    click.option(
        "--loop-by-app/--loop-by-pyspy",
        envvar="LOADLAB_LOOP_BY_APP",
        default=True,
        show_default=True,
        help=(
            "The event loop's stacks by the app's own signal-driven sampler, py-spy at a fifth of --rate "
            "without pausing the server; --loop-by-pyspy: py-spy pauses the server for every sample (the "
            "way before, costlier)."
        ),
    ),
    click.option(
        "--pyspy-on-demand/--pyspy-from-start",
        envvar="LOADLAB_PYSPY_ON_DEMAND",
        default=True,
        show_default=True,
        help=(
            "With --loop-by-app: py-spy attaches only once a thread other than the loop runs (while only the "
            "loop runs, the app's sampler records everything); --pyspy-from-start: from the server's start."
        ),
    ),
    click.option("--no-profile", envvar="LOADLAB_NO_PROFILE", is_flag=True, help="Run the load test without py-spy."),
    click.option(
        "--no-instrument",
        envvar="LOADLAB_NO_INSTRUMENT",
        is_flag=True,
        help="Serve the app without loadlab's instrumentation.",
    ),
    click.option(
        "--health-path",
        envvar="LOADLAB_HEALTH_PATH",
        default="/health",
        show_default=True,
        help="Path polled for readiness and as the idle canary (any answer counts).",
    ),
    click.option(
        "--profiles-dir",
        envvar="LOADLAB_PROFILES_DIR",
        type=click.Path(path_type=Path),
        default=Path("profiles"),
        show_default=True,
    ),
)


def _target_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_TARGET_OPTIONS):
        command = option(command)
    return command


# The load of one run: `loadlab profile` and `loadlab whatif` take it alike.
_LOAD_OPTIONS = (
    click.option("--users", "-u", envvar="LOADLAB_USERS", type=_int_range("--users"), default=20, show_default=True),
    click.option(
        "--spawn-rate", "-r", envvar="LOADLAB_SPAWN_RATE", type=_float_range("--spawn-rate"), default=20.0,
        show_default=True,
    ),
    click.option(
        "--duration", "-t", envvar="LOADLAB_DURATION", type=_float_range("--duration"), default=8.0,
        show_default=True, help="Seconds of load per run.",
    ),
)  # fmt: skip


def _load_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_LOAD_OPTIONS):
        command = option(command)
    return command


def _target_config(opts: dict[str, Any], **more: Any) -> ProfileConfig:
    """A :class:`ProfileConfig` from the options of :data:`_TARGET_OPTIONS`, plus ``more``."""
    return ProfileConfig(
        app=opts["app"],
        factory=opts["factory"],
        scenario=opts["scenario"],
        locustfile=opts["locustfile"],
        tags=_split(opts["tags"]),
        workers=opts["workers"],
        server=opts["server"],
        loop=opts["loop"],
        rate=opts["rate"],
        native=opts["native"],
        nonblocking=opts["nonblocking"],
        loop_by_app=opts["loop_by_app"],
        pyspy_on_demand=opts["pyspy_on_demand"],
        profile=not opts["no_profile"],
        instrument=not opts["no_instrument"],
        health_path=opts["health_path"],
        profiles_dir=opts["profiles_dir"],
        **more,
    )


@main.command()
@_target_options
@click.option(
    "--variants",
    envvar="LOADLAB_VARIANTS",
    help="Tags to run one after another, each on a fresh server (e.g. blocking,async).",
)
@_load_options
@click.option(
    "--locust-processes",
    envvar="LOADLAB_LOCUST_PROCESSES",
    type=_int_range("--locust-processes"),
    default=1,
    show_default=True,
    help="Locust generator processes (its --processes); stats are merged.",
)
@click.option(
    "--expect-workers",
    envvar="LOADLAB_EXPECT_WORKERS",
    type=_int_range("--expect-workers"),
    default=0,
    show_default=True,
    help="Locust workers started elsewhere: run Locust as their master and wait for them (prints their command).",
)
@click.option(
    "--master-bind",
    envvar="LOADLAB_MASTER_BIND",
    default="127.0.0.1",
    show_default=True,
    help="Address the Locust master listens on for workers; anything but loopback is printed as a warning.",
)
@click.option(
    "--master-port",
    envvar="LOADLAB_MASTER_PORT",
    type=_int_range("--master-port"),
    default=5557,
    show_default=True,
)
@click.option(
    "--workers-wait",
    envvar="LOADLAB_WORKERS_WAIT",
    type=_float_range("--workers-wait"),
    default=60.0,
    show_default=True,
    help="Seconds the master waits for --expect-workers to connect before the run fails.",
)
@click.option(
    "--bind",
    envvar="LOADLAB_BIND",
    default="127.0.0.1",
    show_default=True,
    help="Address the server listens on; anything but loopback is printed as a warning.",
)
@click.option(
    "--target-host",
    envvar="LOADLAB_TARGET_HOST",
    help="Load this URL instead of starting a server (nothing is profiled). Loopback only, unless --allow-remote.",
)
@click.option("--allow-remote", envvar="LOADLAB_ALLOW_REMOTE", is_flag=True, help="Let --target-host be remote.")
@click.option(
    "--agent",
    envvar="LOADLAB_AGENT",
    help="URL of a `loadlab agent` on the app's host: it starts and profiles the app there; the load goes from here.",
)
@click.option(
    "--agent-token-file",
    envvar="LOADLAB_AGENT_TOKEN_FILE",
    type=click.Path(path_type=Path),
    help="File holding the agent's token (the same as its --token-file).",
)
@click.option(
    "--out",
    envvar="LOADLAB_OUT",
    type=click.Path(path_type=Path),
    help="The run folder itself (must not exist, or be empty).",
)
@click.option(
    "--fail-ratio",
    envvar="LOADLAB_FAIL_RATIO",
    type=_float_range("--fail-ratio"),
    default=0.01,
    show_default=True,
    help="Share of failed requests above which a run is 'doubtful' (exit 3); all failed is 'failed' (exit 1).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def profile(**opts: Any) -> None:
    """Run the app under py-spy, drive it with Locust, write profiles/<run>/.

    With no options: the default demonstration — the io family's five variants
    (blocking-sleep, threadpool-sleep, offload-sleep, async-sleep, helper-sleep) one after
    another under the same load, then a comparison of them.
    """
    from loadlab.runner import run_profile

    config = _target_config(
        opts,
        variants=_split(opts["variants"]),
        users=opts["users"],
        spawn_rate=opts["spawn_rate"],
        duration=opts["duration"],
        locust_processes=opts["locust_processes"],
        expect_workers=opts["expect_workers"],
        master_bind=opts["master_bind"],
        master_port=opts["master_port"],
        workers_wait=opts["workers_wait"],
        bind=opts["bind"],
        target_host=opts["target_host"],
        allow_remote=opts["allow_remote"],
        agent=opts["agent"],
        agent_token_file=opts["agent_token_file"],
        out=opts["out"],
        fail_ratio=opts["fail_ratio"],
    )
    progress = Progress(quiet=opts["quiet"])
    try:
        check_bind(config.bind)  # before the warning below: a bad address is an error, not a warning
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if not is_loopback(config.bind):
        click.echo(f"warning: the server will listen on {config.bind}, reachable from other machines", err=True)
    if config.expect_workers and not is_loopback(config.master_bind):
        click.echo(
            f"warning: the Locust master will listen on {config.master_bind}:{config.master_port}, "
            "reachable from other machines",
            err=True,
        )
    run_dir = _run_children(lambda: run_profile(config, progress))
    from loadlab.report import summary_text

    click.echo(summary_text(run_dir))
    _exit_for_status(run_dir)


@main.command()
@_target_options
@click.option(
    "--offload",
    "offloads",
    multiple=True,
    required=True,
    metavar="MODULE:CALLEE",
    help="Move every call to CALLEE (as MODULE's code writes it: _throttle, time.sleep) made in an async def "
    "of MODULE off the loop, in memory (repeatable).",
)
@click.option(
    "--to",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Where the calls go: anyio's threadpool, or a process pool (the callee and arguments must pickle).",
)
@click.option(
    "--repeats",
    type=click.IntRange(1, 10),
    default=2,
    show_default=True,
    help="Pairs of runs, interleaved: baseline, offloaded, baseline, offloaded…",
)
@_load_options
@click.option("--out", type=click.Path(path_type=Path), help="The run folder itself (must not exist, or be empty).")
@click.option("--quiet", "-q", is_flag=True, help="No progress output.")
def whatif(offloads: tuple[str, ...], to: str, repeats: int, **opts: Any) -> None:
    """Measure a fix before making it: the app as it is and with blocking calls moved off the loop
    in memory (no file changes), under the same load, interleaved, on fresh servers.

    Example: loadlab whatif -T blocking-sleep --offload target_app.routes.io:time.sleep
    """
    from loadlab.offload import parse_offload, plan
    from loadlab.whatif import run_whatif, summary_lines

    config = _target_config(
        opts, users=opts["users"], spawn_rate=opts["spawn_rate"], duration=opts["duration"], out=opts["out"]
    )
    try:
        parsed = [parse_offload(o, to) for o in offloads]
        config.validated()
        plan(parsed)  # a callee that is not there is refused before any server starts
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    run_dir = _run_children(lambda: run_whatif(config, parsed, repeats, Progress(quiet=opts["quiet"])))
    from loadlab.results import load_run

    data = _stored(lambda: load_run(run_dir))
    click.echo("\n".join(summary_lines(data)))
    click.echo(f"run folder: {run_dir}\nreport (open this first): {run_dir / 'whatif.html'}")
    _exit_for_status(run_dir)


# ``loadlab profile``'s exit code by the run's status (a suite's is its worst variant's).
EXIT_CODES = {"complete": 0, "failed": 1, "doubtful": 3}


def _exit_for_status(run_dir: Path) -> None:
    """Exit 1 for a failed run, 3 for a doubtful one, with its reason on stderr; return if complete."""
    from loadlab.results import load_run

    data = _stored(lambda: load_run(run_dir))
    status = data.get("status", "failed")
    code = EXIT_CODES.get(status, 1)
    if code:
        click.echo(f"{'error' if code == 1 else 'warning'}: the run is {status}: {data.get('reason')}", err=True)
        sys.exit(code)


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def analyze(run_dir: Path) -> None:
    """Re-analyse a stored run (or every variant of a suite) from its raw profile."""
    from loadlab.report import reanalyse, render, summary_text

    def again() -> None:
        reanalyse(run_dir)
        render(run_dir)

    _stored(again, run_dir)
    click.echo(_stored(lambda: summary_text(run_dir), run_dir))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def report(run_dir: Path) -> None:
    """Re-render report.html/report.md (and a suite's comparison) from a stored run."""
    from loadlab.report import render

    click.echo(_stored(lambda: render(run_dir), run_dir))


@main.command(name="compare")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for comparison.html/.md.")
@click.option(
    "--fail-on",
    envvar="LOADLAB_FAIL_ON",
    help="Baseline gate: with BASELINE CURRENT, exit 1 on a regression beyond these rules and beyond the "
    "noise, e.g. 'rps:-10%,p95:+20%,loop_busy:+10pp'.",
)
def compare_cmd(run_dirs: tuple[Path, ...], out: Path | None, fail_on: str | None) -> None:
    """Compare runs (a suite counts as its variants), each against the first; repeats of a
    variant (same name, app, locustfile and tags) are summarised as median and range. Runs that
    share only a name are named apart; a folder given twice counts once.

    With --fail-on, the baseline gate: BASELINE CURRENT (each a run, or a folder of repeats from
    `loadlab smoke --repeats N`), judged rule by rule; with 3 or more runs a side a regression must
    also pass a one-sided Mann–Whitney U test at p <= 0.05, with fewer the rules alone decide. Writes
    comparison.html/.md/.json (and a differential flame graph of the event loop when both sides have
    py-spy profiles) into --out, default CURRENT/baseline-gate."""
    if fail_on is not None:
        _baseline_gate(run_dirs, out, fail_on)
        return
    from loadlab.report import write_comparison
    from loadlab.results import read_json

    target = out or (run_dirs[0] if len(run_dirs) == 1 else Path("profiles") / "comparison")
    path = _stored(lambda: write_comparison(list(run_dirs), target))
    for note in _stored(lambda: read_json(path.with_name("comparison.json"))).get("notes", []):
        click.echo(f"note: {note}", err=True)
    click.echo(path)


def _baseline_gate(run_dirs: tuple[Path, ...], out: Path | None, fail_on: str) -> None:
    from loadlab.analysis.regress import RuleError, parse_rules
    from loadlab.baseline import summary_lines, write_gate

    if len(run_dirs) != 2:
        raise click.UsageError(f"--fail-on compares two folders, BASELINE CURRENT; got {len(run_dirs)}")
    try:
        parse_rules(fail_on)
    except RuleError as exc:
        raise click.UsageError(str(exc)) from None
    target = out or run_dirs[1] / "baseline-gate"
    result = _stored(lambda: write_gate(run_dirs[0], run_dirs[1], fail_on, target), run_dirs[1])
    click.echo("\n".join(summary_lines(result)))
    click.echo(target / "comparison.html")
    sys.exit(1 if result["regressed"] else 0)


@main.command()
@click.option(
    "--duration", "-t", type=click.FloatRange(2, 600), default=5.0, show_default=True, help="Seconds per run."
)
@click.option("--users", "-u", type=click.IntRange(2, 1000), default=20, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="The tour folder (must not exist, or be empty).")
@click.option("--quiet", "-q", is_flag=True)
def tour(duration: float, users: int, out: Path | None, quiet: bool) -> None:
    """Measure each claim of FastAPI's concurrency page on the demo app: one report, a verdict each."""
    from loadlab.tour import run_tour

    config = ProfileConfig(users=users, spawn_rate=float(users), out=out)
    path = _run_children(lambda: run_tour(config, Progress(quiet=quiet), duration))
    click.echo((path.parent / "tour.md").read_text())
    click.echo(f"report: {path}")


@main.command()
@click.option("--duration", "-t", type=click.FloatRange(60, 7200), default=600.0, show_default=True)
@click.option("--users", "-u", type=click.IntRange(2, 1000), default=20, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="The run folder (must not exist, or be empty).")
@click.option("--quiet", "-q", is_flag=True)
def soak(duration: float, users: int, out: Path | None, quiet: bool) -> None:
    """Mixed load on the healthy routes for a long while; fail if memory grows steadily."""
    from loadlab.soak import run_soak

    config = ProfileConfig(users=users, spawn_rate=float(users), duration=duration, out=out)
    run_dir, passed = _run_children(lambda: run_soak(config, Progress(quiet=quiet)))
    click.echo((run_dir / "soak.md").read_text())
    sys.exit(0 if passed else 1)


# Commands with their own argument parsers: the CLI forwards everything after the name.
_FORWARD = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@main.command(context_settings=_FORWARD)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def smoke(args: tuple[str, ...]) -> None:
    """CI smoke gates on your app (--app) or the demo: budgets, the culprit, JUnit (--help for flags)."""
    from loadlab.smoke import main as smoke_main

    sys.exit(smoke_main(list(args)))


@main.command(context_settings={"ignore_unknown_options": True})
@_target_options
@click.option(
    "--web-port",
    envvar="LOCUST_WEB_PORT",
    type=click.IntRange(1, 65535),
    default=8089,
    show_default=True,
    help="Port of Locust's web UI (env LOCUST_WEB_PORT).",
)
@click.option(
    "--app-port",
    envvar="PORT",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port of the app (env PORT); 0: any free port.",
)
@click.argument("locust_args", nargs=-1, type=click.UNPROCESSED)
def ui(web_port: int, app_port: int, locust_args: tuple[str, ...], **opts: Any) -> None:
    """Locust's web UI on the app: each test started there is profiled and diagnosed.

    The app runs for the whole session; py-spy records each test from Start to Stop into
    <profiles-dir>/<time>-ui/test-<n>/ (run.json, report.html, flame graphs), shown in the
    web UI's Profile tab. Arguments after -- go to Locust unchanged.
    """
    from loadlab.locust_ui import ChildError, PortError, ScenarioError, UiConfig, run

    config = UiConfig(_target_config(opts), web_port=web_port, app_port=app_port, locust_args=locust_args)
    try:
        config.profile.validated()
        sys.exit(run(config))
    except (ConfigError, ScenarioError, PortError) as exc:
        click.echo(f"error: {exc}", err=True)  # one line, exit 2: what to change is in it
        sys.exit(2)
    except (ChildError, ProcessError, RunFolderError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@main.command(context_settings=_FORWARD)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def agent(args: tuple[str, ...]) -> None:
    """Run next to the app on its own host: `loadlab profile --agent URL` profiles it there (--help for flags)."""
    from loadlab.agent import main as agent_main

    sys.exit(agent_main(list(args)))


@main.command(context_settings=_FORWARD)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def bench(args: tuple[str, ...]) -> None:
    """Measure the harness itself: accuracy, overhead, headroom (~12 min; from a checkout)."""
    if Path("benchmarks", "bench.py").is_file() and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # a console script's path starts at its own folder, not here
    try:
        from benchmarks.bench import main as bench_main
    except ImportError:
        raise click.UsageError("loadlab bench measures a checkout of loadlab: run it from the repository") from None
    sys.exit(bench_main(list(args)))


@main.command()
def doctor() -> None:
    """Check that this machine can profile: Python vs py-spy, ptrace, a test attach, free ports."""
    from loadlab.doctor import run_checks

    ok = True
    for check in run_checks():
        mark = "ok  " if check.ok else "FAIL"
        click.echo(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok:
            ok = False
            click.echo(f"       fix: {check.fix}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
