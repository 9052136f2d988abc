"""The eight measurements of `make bench` (accuracy, profiling and instrumentation overhead, generator
headroom, the threadpool hop, analysis speed, time to answer, the model's what-ifs), each returning rows of the table
and keeping its raw data.

Every comparison is paired and interleaved (``A B A B …``), each variant on a fresh server; the
figure is the median of the per-round ratios with their min–max. Each raw measurement keeps the
server's, the generator's and the profiler's CPU, and what the rest of the machine used.
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks._measure import (
    BARE_APP,
    INSTRUMENTED_APP,
    REPO,
    Pinning,
    Profiler,
    QuietGate,
    RunningServer,
    run_cli,
    run_locust,
    run_wrk,
    server,
)
from benchmarks._stats import Spread, hop_cost_us, interleaved, paired_ratios, synthesize_raw, total_samples


@dataclass
class Context:
    pin: Pinning
    work_dir: Path
    gate: QuietGate
    wrk: str | None
    wrk_status: str
    repeats: int
    duration: float  # seconds of load per measurement
    env: dict[str, str]
    progress: Callable[[str], None]
    retries: int = 8  # re-measurements of disturbed runs left, bounded to keep the bench under 15 min
    # Item 2's arms whose label starts with one of these (None: all); "no profiling" is always run.
    arms: tuple[str, ...] | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Row:
    item: str
    goal: str
    measured: str
    figure: str
    met: bool | None  # None: no goal (a figure to know), or not measured
    note: str
    spread: Spread | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "goal": self.goal,
            "measured": self.measured,
            "figure": self.figure,
            "met": self.met,
            "note": self.note,
            "spread": self.spread.to_dict() if self.spread else None,
        }


def _measure(ctx: Context, label: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One measurement after the quiet gate; measured once more if the rest of the machine used
    more than half a core meanwhile (once per measurement, ``ctx.retries`` times per bench). The
    disturbed attempt stays in the JSON, under ``disturbed``."""
    for attempt in (1, 2):
        gate = ctx.gate.wait(label)
        ctx.progress(f"  {label} (load average {gate['loadavg_1m']}, busy {gate['busy_cpu_percent']:.0f}% before)")
        result = fn()
        result["label"] = label
        result["gate"] = gate
        ctx.progress(
            f"    {result['rps']:,.1f} req/s; CPU server {result.get('server_cpu_percent')}%, "
            f"generator {result.get('generator_cpu_percent')}%, profiler {result.get('profiler_cpu_percent')}%, "
            f"others {result.get('other_cpu_percent')}%"
        )
        if attempt == 2 or (result.get("other_cpu_percent") or 0.0) <= DISTURBED_PERCENT or ctx.retries <= 0:
            break
        ctx.retries -= 1
        ctx.raw.setdefault("disturbed", []).append(result)
        ctx.progress("    the machine was busy with something else meanwhile: measuring it again")
    return result


DISTURBED_PERCENT = 50.0  # CPU of everything else on the machine, in % of one core, during a measurement


def _cpu_note(results: list[dict[str, Any]], profiler: bool = False) -> str:
    """The median CPU of server and generator (and py-spy) over some measurements, for the note;
    and how many of them shared the machine with someone else's work."""

    def med(key: str) -> str:
        values = [r[key] for r in results if r.get(key) is not None]
        return f"{Spread.of(values).median:.0f}%" if values else "?"

    text = f"CPU server {med('server_cpu_percent')}, generator {med('generator_cpu_percent')}"
    if profiler:
        text += f", py-spy {med('profiler_cpu_percent')}"
    disturbed = sum(1 for r in results if (r.get("other_cpu_percent") or 0.0) > DISTURBED_PERCENT)
    if disturbed:
        text += f"; {disturbed} of {len(results)} runs shared the box (others > {DISTURBED_PERCENT:.0f}% of a core)"
    return text


# 1 ─ accuracy against Little's law

ACCURACY_USERS = 100
ACCURACY_MS = 50
ACCURACY_DURATION = 8.0  # at least the harness's default: Locust's figure includes the ramp-up


@dataclass(frozen=True)
class _Accuracy:
    tag: str
    route: str
    ceiling: float  # req/s by Little's law for 100 users and 50 ms
    extra: tuple[str, ...] = ()


ACCURACY_VARIANTS = {
    "async-sleep": _Accuracy("async-sleep", "/io/async-sleep", ACCURACY_USERS / (ACCURACY_MS / 1000)),
    "blocking-sleep": _Accuracy("blocking-sleep", "/io/blocking-sleep", 1 / (ACCURACY_MS / 1000)),
    "threadpool-sleep": _Accuracy(
        "threadpool-sleep", "/io/threadpool-sleep", min(ACCURACY_USERS, 40) / (ACCURACY_MS / 1000)
    ),
}


def accuracy(ctx: Context) -> list[Row]:
    duration = max(ctx.duration, ACCURACY_DURATION)
    ctx.progress(f"1. accuracy: measured / Little's-law ceiling, 50 ms, 100 users (+ the canary), {duration:g} s")
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in ACCURACY_VARIANTS}
    env = dict(ctx.env, LOADLAB_MS=str(ACCURACY_MS))
    for rnd, label in interleaved(list(ACCURACY_VARIANTS), ctx.repeats):
        v = ACCURACY_VARIANTS[label]

        def one(v: _Accuracy = v) -> dict[str, Any]:
            with server(INSTRUMENTED_APP, ctx.pin, ctx.work_dir, env=env) as s:
                return run_locust(
                    "loadtests/io_routes.py",
                    v.tag,
                    users=ACCURACY_USERS + 1,  # the canary is one of Locust's users
                    duration=duration,
                    pin=ctx.pin,
                    running=s,
                    work_dir=ctx.work_dir,
                    route=v.route,
                    env=env,
                    extra=v.extra,
                )

        r = _measure(ctx, f"round {rnd + 1}: {label}", one)
        r["ceiling_rps"] = v.ceiling
        r["ratio"] = r["rps"] / v.ceiling
        results[label].append(r)
    ctx.raw["1_accuracy"] = results
    rows = []
    for label, rs in results.items():
        v = ACCURACY_VARIANTS[label]
        spread = Spread.of(r["ratio"] for r in rs)
        met = spread.median >= 0.93
        note = f"ceiling {v.ceiling:,.0f} req/s; {_cpu_note(rs)}"
        if not met:
            note += (
                "; MISSED: Locust's req/s includes the ramp-up (the users spawn over the first second) and each "
                "request's time beyond the 50 ms; longer runs would dilute the ramp-up"
            )
        rows.append(Row(f"1. accuracy {v.route}", "≥ 0.93", "measured / ceiling", spread.text(3), met, note, spread))
    return rows


# 2 ─ profiling overhead

DEFAULT = "default (loop sampled in the app at 100 Hz; py-spy 20 Hz non-blocking, once a thread besides the loop runs)"
FROM_START = "--pyspy-from-start (py-spy 20 Hz non-blocking from the server's start: the default before)"
PROFILER_VARIANTS: dict[str, Profiler | None] = {
    "no profiling": None,
    DEFAULT: Profiler(),
    FROM_START: Profiler(on_demand=False),
    "the app's samplers alone (no py-spy)": Profiler(pyspy=False),
    "--loop-by-pyspy (py-spy 100 Hz blocking on the server)": Profiler(loop_sampler=False),
    "before issue 18 (--subprocesses)": Profiler(split=False, loop_sampler=False),
    "--nonblocking, py-spy 100 Hz on the loop too": Profiler(nonblocking=True, loop_sampler=False),
    # Where py-spy's own CPU goes: the other arms pin it to the server's core (the worst case).
    "--pyspy-from-start, py-spy on wrk's core": Profiler(on_generator_core=True, on_demand=False),
}
# The same on a route that keeps AnyIO's 40 threads busy (sleeping): many stacks per sample. There
# py-spy attaches at the first request, so the default and --pyspy-from-start record alike.
THREADPOOL_VARIANTS = (
    "no profiling",
    DEFAULT,
    FROM_START,
    "--pyspy-from-start, py-spy on wrk's core",
    "--loop-by-pyspy (py-spy 100 Hz blocking on the server)",
    "before issue 18 (--subprocesses)",
)
THREADPOOL_PATH = "/io/threadpool-sleep"
THREADPOOL_CONNECTIONS = 40
OVERHEAD_CONNECTIONS = 20  # the harness's default users
SATURATED_PERCENT = 95.0  # server and py-spy together, of the server's core: the server is CPU-bound


def pyspy_floor(results: list[dict[str, Any]]) -> list[float | None]:
    """Per round, the share of the server's core py-spy took while the server wanted all of it
    (together above ``SATURATED_PERCENT``): throughput the CPU-bound server could not have, the
    least its profiling can cost on that core (py-spy's cost per sample × samples per second).
    None where the core was not saturated (the server then had time to spare for py-spy)."""
    floors: list[float | None] = []
    for r in results:
        server, spy = r.get("server_cpu_percent"), r.get("profiler_cpu_percent")
        busy = (server or 0.0) + (spy or 0.0)
        floors.append(spy / busy if server is not None and spy is not None and busy >= SATURATED_PERCENT else None)
    return floors


def _wrk_on(ctx: Context, app: str, path: str, connections: int, **server_kw: Any) -> dict[str, Any]:
    assert ctx.wrk is not None
    with server(app, ctx.pin, ctx.work_dir, env=ctx.env, **server_kw) as s:
        return _wrk(ctx, s, path, connections)


def _wrk(ctx: Context, s: RunningServer, path: str, connections: int) -> dict[str, Any]:
    assert ctx.wrk is not None
    return run_wrk(
        ctx.wrk,
        s.url + path,
        connections=connections,
        duration=ctx.duration,
        pin=ctx.pin,
        running=s,
        work_dir=ctx.work_dir,
    )


def _skipped(item: str, goal: str, measured: str, ctx: Context) -> list[Row]:
    return [Row(item, goal, measured, "not measured", None, f"SKIPPED: {ctx.wrk_status}")]


def profiling_overhead(ctx: Context) -> list[Row]:
    """Profiling's cost in throughput — py-spy and the app's own samplers, as `loadlab profile`
    runs them — paired against the same app unprofiled, on the CPU-bound trivial route (the worst
    case) and on a route that keeps the 40 threads busy."""
    if ctx.wrk is None:
        return _skipped("2. profiling overhead", "≤ 3% loss", "1 − with/without", ctx)
    rows = []
    for key, path, connections, every in (
        ("2_profiling_overhead", "/trivial/async", OVERHEAD_CONNECTIONS, tuple(PROFILER_VARIANTS)),
        ("2_profiling_overhead_threadpool", THREADPOOL_PATH, THREADPOOL_CONNECTIONS, THREADPOOL_VARIANTS),
    ):
        labels = tuple(x for x in every if x == "no profiling" or not ctx.arms or x.startswith(ctx.arms))
        ctx.progress(f"2. profiling overhead: {path} under wrk -c {connections}, profiling variants")
        results: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
        for rnd, label in interleaved(list(labels), ctx.repeats):
            prof = PROFILER_VARIANTS[label]
            r = _measure(
                ctx,
                f"round {rnd + 1}: {path}, {label}",
                partial(_wrk_on, ctx, INSTRUMENTED_APP, path, connections, profiler=prof),
            )
            results[label].append(r)
        ctx.raw[key] = results
        base = [r["rps"] for r in results["no profiling"]]
        where = "" if path == "/trivial/async" else f" on {path} ({connections} busy threads)"
        for label, rs in results.items():
            if label == "no profiling":
                continue
            losses = [1 - x for x in paired_ratios(base, [r["rps"] for r in rs])]
            spread = Spread.of(losses)
            met = spread.median <= 0.03
            note = f"{_cpu_note(rs, profiler=True)}; baseline {Spread.of(base).text(0)} req/s"
            floors = pyspy_floor(rs)
            above = [loss - f for loss, f in zip(losses, floors, strict=True) if f is not None]
            prof = PROFILER_VARIANTS[label]
            ran = any(f for f in floors if f)  # an on-demand py-spy may never have started
            if above and ran and prof is not None and prof.pyspy and not prof.on_generator_core:  # on the server's core
                floor = Spread.of([f for f in floors if f is not None])
                note += (
                    f"; floor (py-spy's share of the saturated server core) {floor.text(1, percent=True)}, "
                    f"the loss above it {Spread.of(above).text(1, percent=True)}"
                )
            if label.startswith("default (") and not met:
                note += "; MISSED: see the README's 'What profiling costs'"
            rows.append(
                Row(
                    f"2. profiling overhead{where}, {label}",
                    "≤ 3% loss",
                    "throughput loss vs no profiling",
                    spread.text(1, percent=True),
                    met,
                    note,
                    spread,
                )
            )
    return rows


# 3 ─ instrumentation overhead


def instrumentation_overhead(ctx: Context) -> list[Row]:
    ctx.progress("3. instrumentation overhead: /trivial/async, instrumented app vs bare app, wrk")
    if ctx.wrk is None:
        return _skipped("3. instrumentation overhead", "≤ 5% loss", "1 − instrumented/bare", ctx)
    variants = {
        "bare": lambda: _wrk_on(ctx, BARE_APP, "/trivial/async", OVERHEAD_CONNECTIONS, factory=True),
        "instrumented": lambda: _wrk_on(ctx, INSTRUMENTED_APP, "/trivial/async", OVERHEAD_CONNECTIONS),
    }
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for rnd, label in interleaved(list(variants), ctx.repeats):
        results[label].append(_measure(ctx, f"round {rnd + 1}: {label}", variants[label]))
    ctx.raw["3_instrumentation_overhead"] = results
    losses = [
        1 - x for x in paired_ratios([r["rps"] for r in results["bare"]], [r["rps"] for r in results["instrumented"]])
    ]
    spread = Spread.of(losses)
    met = spread.median <= 0.05
    note = (
        f"bare {Spread.of(r['rps'] for r in results['bare']).text(0)} req/s; "
        f"{_cpu_note(results['bare'] + results['instrumented'])}; server CPU-bound (worst case)"
    )
    if not met:
        note += "; MISSED: profile the instrumented app to see which part (probe, gauge, watchdog) costs it"
    return [
        Row(
            "3. instrumentation overhead",
            "≤ 5% loss",
            "throughput loss vs bare app",
            spread.text(1, percent=True),
            met,
            note,
            spread,
        )
    ]


# 4 ─ load-generator headroom

HEADROOM_USERS = 20  # the harness's default -u


def generator_headroom(ctx: Context) -> list[Row]:
    ctx.progress(f"4. generator headroom: the harness's Locust set-up vs wrk, /trivial/async, {HEADROOM_USERS} users")
    if ctx.wrk is None:
        return _skipped("4. generator headroom", "≥ 0.90", "Locust / wrk req/s", ctx)

    def locust() -> dict[str, Any]:
        with server(INSTRUMENTED_APP, ctx.pin, ctx.work_dir, env=ctx.env) as s:
            return run_locust(
                "loadtests/trivial_routes.py",
                "async",
                users=HEADROOM_USERS,
                duration=ctx.duration,
                pin=ctx.pin,
                running=s,
                work_dir=ctx.work_dir,
                route="/trivial/async",
                env=ctx.env,
            )

    variants = {"wrk": lambda: _wrk_on(ctx, INSTRUMENTED_APP, "/trivial/async", HEADROOM_USERS), "locust": locust}
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in variants}
    for rnd, label in interleaved(list(variants), ctx.repeats):
        results[label].append(_measure(ctx, f"round {rnd + 1}: {label}", variants[label]))
    ratios = paired_ratios([r["rps"] for r in results["wrk"]], [r["rps"] for r in results["locust"]])
    spread = Spread.of(ratios)
    locust_cpu = Spread.of(r["generator_cpu_percent"] or 0.0 for r in results["locust"]).median
    server_cpu = Spread.of(r["server_cpu_percent"] or 0.0 for r in results["locust"]).median
    met = spread.median >= 0.90
    note = (
        f"wrk {Spread.of(r['rps'] for r in results['wrk']).text(0)} req/s; with Locust: {_cpu_note(results['locust'])}"
    )
    if not met:
        bound = (
            "Locust was CPU-bound"
            if locust_cpu >= 90
            else f"neither Locust ({locust_cpu:.0f}%) nor the server ({server_cpu:.0f}%) used a full core"
        )
        note += (
            f"; MISSED: {bound}; more generator processes (Locust --processes) on cores of their own would close "
            "it — on 2 cores there is no core to spare"
        )
    rows = [
        Row("4. generator headroom", "≥ 0.90", "Locust / wrk req/s", spread.text(3), met, note, spread),
        _harness_notices(ctx),
    ]
    ctx.raw["4_generator_headroom"] = results
    return rows


def _harness_notices(ctx: Context) -> Row:
    """One real ``loadlab profile`` run on the same route: does its report say the generator was
    the limit exactly when Locust's CPU says so?"""
    out = ctx.work_dir / f"notice-{time.monotonic_ns()}"
    argv = [sys.executable, "-m", "loadlab", "profile", "--scenario", "trivial", "-T", "async", "--no-profile"]
    argv += ["--users", str(HEADROOM_USERS), "--duration", f"{ctx.duration:g}", "--out", str(out)]
    ctx.gate.wait("loadlab profile (does the harness notice?)")
    ctx.progress("  one `loadlab profile --scenario trivial -T async --no-profile` run, unpinned")
    code, wall = run_cli(argv, timeout=ctx.duration + 120, log=ctx.work_dir / "notice.log")
    item = "4. harness notices a generator-bound run"
    try:
        run = json.loads((out / "run.json").read_text())
    except (OSError, ValueError) as exc:
        return Row(item, "flags it", "report vs Locust CPU", "not measured", False, f"loadlab profile failed: {exc}")
    cpu = max((p.get("locust_cpu_percent") or 0.0 for p in run.get("timeseries", [])), default=0.0)
    theory = (run.get("report") or {}).get("theory") or []
    limits = [t.get("limited_by") for t in theory if t.get("limited_by")]
    thresholds = run.get("thresholds") or {}
    flagged = any("generator" in str(x) for x in limits) or thresholds.get("valid") is False
    should = cpu >= 90.0
    ctx.raw["4_harness_notices"] = {
        "exit_code": code,
        "wall_s": round(wall, 1),
        "locust_cpu_max": cpu,
        "limited_by": limits,
        "thresholds_valid": thresholds.get("valid"),
        "flagged": flagged,
        "status": run.get("status"),
    }
    figure = f"{'flagged' if flagged else 'not flagged'} at Locust CPU {cpu:.0f}%"
    note = f"theory 'limited by': {limits or 'none'}; smoke gates valid: {thresholds.get('valid')}"
    if flagged != should:
        note += "; MISSED: the report's verdict does not match Locust's CPU reading"
    return Row(item, "flags it when CPU ≥ 90%", "report vs Locust CPU", figure, flagged == should, note)


# 5 ─ the threadpool hop

HOP_CONNECTIONS = {"1 connection": 1, "64 connections (saturating)": 64}


def threadpool_hop(ctx: Context) -> list[Row]:
    ctx.progress("5. threadpool hop: /trivial/sync vs /trivial/async, bare app, wrk at 1 and 64 connections")
    if ctx.wrk is None:
        return _skipped("5. threadpool hop", "(a figure)", "µs per request", ctx)
    rows = []
    ctx.raw["5_threadpool_hop"] = {}
    for level, conns in HOP_CONNECTIONS.items():
        results: dict[str, list[dict[str, Any]]] = {"async": [], "sync": []}
        for rnd, label in interleaved(["async", "sync"], ctx.repeats):
            results[label].append(
                _measure(
                    ctx,
                    f"round {rnd + 1}: /trivial/{label}, {level}",
                    partial(_wrk_on, ctx, BARE_APP, f"/trivial/{label}", conns, factory=True),
                )
            )
        costs = [hop_cost_us(a["rps"], s["rps"]) for a, s in zip(results["async"], results["sync"], strict=True)]
        spread = Spread.of(costs)
        ratio = Spread.of(paired_ratios([r["rps"] for r in results["async"]], [r["rps"] for r in results["sync"]]))
        what = "extra latency" if conns == 1 else "extra server time"
        note = (
            f"sync/async req/s {ratio.text(2)}; async {Spread.of(r['rps'] for r in results['async']).text(0)} req/s; "
            f"{what}; ≈ {spread.median * 1000 / 100:,.0f}× the page's ~100 ns; {_cpu_note(results['sync'])}"
        )
        rows.append(
            Row(
                f"5. threadpool hop, {level}", "(a figure)", "µs per request", spread.text(1, " µs"), None, note, spread
            )
        )
        ctx.raw["5_threadpool_hop"][level] = results
    return rows


# 6 ─ analysis speed

ANALYSIS_SAMPLES = 1_000_000
ANALYSIS_VARIANTS = 25  # copies of each recorded stack, with shifted line numbers


def analysis_speed(ctx: Context) -> list[Row]:
    from loadlab.analysis.attribution import analyse_profile
    from loadlab.analysis.stacks import read_raw

    ctx.progress(f"6. analysis speed: parse + classify + attribute {ANALYSIS_SAMPLES:,} samples")
    recorded: list[str] = []
    for path in sorted((REPO / "tests" / "data").glob("*.raw.txt.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            recorded.extend(line for line in f if line.strip())
    lines = synthesize_raw(recorded, ANALYSIS_SAMPLES, ANALYSIS_VARIANTS)
    raw = ctx.work_dir / "synthetic-1M.raw.txt"
    raw.write_text("\n".join(lines) + "\n", encoding="utf-8")
    routes = REPO / "tests" / "data" / "target-app.routes.json"
    runs = []
    for i in range(ctx.repeats):
        ctx.gate.wait(f"analysis {i + 1}")
        t0 = time.perf_counter()
        profile = read_raw(raw)
        t1 = time.perf_counter()
        analysis = analyse_profile(profile, routes_file=routes)
        t2 = time.perf_counter()
        assert analysis["samples"] == ANALYSIS_SAMPLES, analysis["samples"]
        runs.append({"parse_s": t1 - t0, "analyse_s": t2 - t1, "total_s": t2 - t0})
        ctx.progress(f"  run {i + 1}: parse {t1 - t0:.2f} s, classify + attribute {t2 - t1:.2f} s")
    ctx.raw["6_analysis_speed"] = {
        "samples": total_samples(lines),
        "distinct_stacks": len({line.rpartition(" ")[0] for line in lines}),
        "recorded_stacks": len(recorded),
        "file_bytes": raw.stat().st_size,
        "runs": runs,
    }
    spread = Spread.of(r["total_s"] for r in runs)
    met = spread.median <= 5.0
    note = (
        f"{ctx.raw['6_analysis_speed']['distinct_stacks']:,} distinct stacks (the {len(recorded)} of tests/data × "
        f"{ANALYSIS_VARIANTS} line variants), "
        f"{raw.stat().st_size / 1e6:.0f} MB; parse {Spread.of(r['parse_s'] for r in runs).text(2, ' s')}"
    )
    if not met:
        note += "; MISSED: profile read_raw/analyse_profile; the per-line regexes are the first suspects"
    return [Row("6. analysis speed", "≤ 5 s", "wall time, 1,000,000 samples", spread.text(2, " s"), met, note, spread)]


# 7 ─ time to answer


def time_to_answer(ctx: Context) -> list[Row]:
    ctx.progress("7. time to answer: the default `loadlab profile` (what `make profile` runs), once")
    out = Path(tempfile.mkdtemp(prefix="bench-profile-", dir=ctx.work_dir)) / "run"
    argv = [sys.executable, "-m", "loadlab", "profile", "--out", str(out)]
    ctx.gate.wait("make profile")
    code, wall = run_cli(argv, timeout=600, log=ctx.work_dir / "profile.log")
    suite: dict[str, Any] = {}
    try:
        suite = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        pass
    ctx.raw["7_time_to_answer"] = {
        "argv": argv[1:],
        "exit_code": code,
        "wall_s": round(wall, 2),
        "status": suite.get("status"),
        "variants": [v.get("name") for v in suite.get("variants", [])],
        "suite_total_s": (suite.get("timings_s") or {}).get("total"),
    }
    ctx.progress(f"  {wall:.1f} s, exit code {code}, status {suite.get('status')}")
    spread = Spread.of([wall])
    met = wall <= 90.0 and code == 0
    variants = len(suite.get("variants", []))
    note = (
        f"one run (not repeated: it is a wall time, not a ratio); {variants} variants × 8 s of load; "
        f"exit code {code}, status {suite.get('status')}"
    )
    if not met:
        note += "; MISSED: fewer default variants or shorter load per variant would close it"
    return [Row("7. time to answer", "≤ 90 s", "wall time of `make profile`", spread.text(1, " s"), met, note, spread)]


# 8 ─ the queueing model's what-ifs against the demonstration's real changes

WHAT_IF_FIT = 0.15


def what_ifs(ctx: Context) -> list[Row]:
    """Each blocking demo variant profiled, the model's what-if for its blocker read from it, then
    its offloaded twin measured; once per round, the pairs interleaved."""
    from loadlab.analysis.mix import WHAT_IF_TWINS, what_if_check

    ctx.progress(f"8. what-ifs: the model's prediction of each offloaded twin, {ctx.duration:g} s per run")
    checks: dict[str, list[dict[str, Any]]] = {}
    pairs = {
        f"{scenario} {before} → {after}": (scenario, before, after, f) for scenario, before, after, f in WHAT_IF_TWINS
    }
    for rnd, label in interleaved(list(pairs), ctx.repeats):
        scenario, before, after, function = pairs[label]
        runs = []
        for tag in (before, after):
            out = Path(tempfile.mkdtemp(prefix=f"bench-{tag}-", dir=ctx.work_dir)) / "run"
            argv = [sys.executable, "-m", "loadlab", "profile", "--scenario", scenario, "-T", tag]
            argv += ["-t", f"{ctx.duration:g}", "-q", "--out", str(out)]
            ctx.gate.wait(f"round {rnd + 1}: {scenario} {tag}")
            run_cli(argv, timeout=300, log=ctx.work_dir / f"what-if-{tag}.log")
            try:
                runs.append(json.loads((out / "run.json").read_text()))
            except (OSError, ValueError):
                runs.append({})
        check = what_if_check(runs[0], runs[1], function) if all(r.get("status") == "complete" for r in runs) else None
        ctx.progress(
            f"  {label}: "
            + (f"{check['predicted_rps']} predicted, {check['measured_rps']} measured" if check else "no check")
        )
        if check:
            checks.setdefault(label, []).append(check)
    ctx.raw["8_what_ifs"] = checks
    rows = []
    for label, cs in checks.items():
        spread = Spread.of(c["ratio"] for c in cs)
        met = abs(spread.median - 1) <= WHAT_IF_FIT
        c = cs[-1]

        def figure(key: str, cs: list[dict[str, Any]] = cs) -> str:
            return Spread.of(x[key] for x in cs).text(0)

        note = (
            f"moving `{c['function']}` to {c['to']}: predicted {figure('predicted_rps')} req/s from "
            f"{figure('before_rps')}; twin measured {figure('measured_rps')}"
        )
        if not met:
            note += (
                "; MISSED: the model keeps each request's CPU time as measured on the loop, but a process pool "
                "adds its own (pickling, the pool's threads) and two cores computing at once each run slower"
            )
        rows.append(
            Row(f"8. what-if {label}", "within ±15%", "twin measured / predicted", spread.text(3), met, note, spread)
        )
    return rows


ITEMS: dict[int, Callable[[Context], list[Row]]] = {
    1: accuracy,
    2: profiling_overhead,
    3: instrumentation_overhead,
    4: generator_headroom,
    5: threadpool_hop,
    6: analysis_speed,
    7: time_to_answer,
    8: what_ifs,
}
