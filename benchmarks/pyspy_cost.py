"""What one py-spy sample costs on this machine, per thread and per process (issue 18).

``python -m benchmarks.pyspy_cost`` (``make bench-pyspy``) attaches ``py-spy record --pid`` to a
target (``benchmarks/_spytarget.py``: a main thread counting as fast as it can, N idle threads,
M idle spawned children) in each setting, and measures over the same windows:

- **py-spy's CPU**, in % of one core, from its process's CPU times, and so its cost per sample;
- **the target's loss**: the main thread's counting rate with py-spy attached against the windows
  just before and after without it (paired, interleaved). With py-spy on the other core this is
  what pausing the process costs the app; with py-spy on the target's own core (a CPU-bound server
  on a full core), py-spy's CPU is taken from the app as well.

It writes ``benchmarks/results/pyspy-cost-<time>.json`` (every window) and ``.md`` (the table).
Fit: CPU per sample = a + b × threads, by least squares over the blocking (and nonblocking) rows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from loadlab.processes import ManagedProcess, pyspy_binary
from loadlab.recording import ChildRecorders, ThreadWatch, threads_to_ignore

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


@dataclass(frozen=True)
class Setting:
    threads: int
    children: int
    flags: tuple[str, ...]
    same_core: bool = False  # py-spy on the target's core (else on the other one)
    rate: int = 100

    @property
    def label(self) -> str:
        core = "same core" if self.same_core else "other core"
        return f"{self.threads} threads, {self.children} children, --rate {self.rate} {' '.join(self.flags)} ({core})"


BASE = ("--idle", "--threads")
THREAD_FRAMES = 16  # an idle thread of the target: threading's 3, _park × 11, Event.wait, Condition.wait
SETTINGS = [
    Setting(1, 0, BASE),
    Setting(10, 0, BASE),
    Setting(40, 0, BASE),
    Setting(1, 0, (*BASE, "--nonblocking")),
    Setting(10, 0, (*BASE, "--nonblocking")),
    Setting(40, 0, (*BASE, "--nonblocking")),
    Setting(10, 0, ("--threads",)),
    Setting(10, 3, (*BASE, "--subprocesses")),
    Setting(10, 3, (*BASE, "--subprocesses", "--nonblocking")),
    Setting(10, 0, (*BASE, "--native")),
    Setting(10, 0, BASE, same_core=True),
    Setting(10, 0, (*BASE, "--nonblocking"), same_core=True),
    Setting(10, 0, BASE, same_core=True, rate=50),
]


def _rate(lines: list[tuple[float, int]], start: float, end: float) -> float:
    inside = [(t, n) for t, n in lines if start <= t <= end]
    if len(inside) < 2:
        raise RuntimeError("the target printed too little in a window (is it running?)")
    (t0, n0), (t1, n1) = inside[0], inside[-1]
    return (n1 - n0) / (t1 - t0)


def _read(log: Path) -> list[tuple[float, int]]:
    out = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((float(parts[0]), int(parts[1])))
    return out


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(
        times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)
    )


def measure(
    setting: Setting, *, window: float, rounds: int, work: Path, cores: tuple[int, int] | None
) -> dict[str, Any]:
    spy = pyspy_binary()
    if spy is None:
        raise SystemExit("py-spy was not found (pip install py-spy, or set LOADLAB_PYSPY)")
    taskset = (lambda c: ["taskset", "-c", str(c)]) if cores else (lambda c: [])
    target_core, other = cores if cores else (0, 0)
    log = work / f"target-{os.getpid()}-{time.monotonic_ns()}.log"
    argv = [
        *taskset(target_core),
        sys.executable,
        "-m",
        "benchmarks._spytarget",
        str(setting.threads),
        str(setting.children),
    ]
    windows: list[dict[str, Any]] = []
    with ManagedProcess(argv, name="spy-target", cwd=REPO, log_path=log) as target:
        deadline = time.monotonic() + 30
        while len(_read(log)) < 5 or len(psutil.Process(target.pid).children()) < setting.children:
            if time.monotonic() > deadline or target.poll() is not None:
                raise RuntimeError(f"the target did not start; see {log}")
            time.sleep(0.1)
        time.sleep(1.0)
        for _ in range(rounds):
            off0 = time.monotonic()
            time.sleep(window)
            off1 = time.monotonic()
            out = work / f"spy-{time.monotonic_ns()}.raw.txt"
            spy_argv = [
                *taskset(target_core if setting.same_core else other),
                spy,
                "record",
                "--rate",
                str(setting.rate),
            ]
            spy_argv += [*setting.flags, "--format", "raw", "--output", str(out), "--pid", str(target.pid)]
            with ManagedProcess(spy_argv, name="py-spy", log_path=work / "py-spy.log") as recorder:
                time.sleep(1.0)  # attached, symbols read: the steady state starts here
                meter = psutil.Process(recorder.pid)
                on0, cpu0 = time.monotonic(), _cpu(meter)
                time.sleep(window)
                on1, cpu1 = time.monotonic(), _cpu(meter)
                os.kill(recorder.pid, signal.SIGINT)
                deadline = time.monotonic() + 15
                while recorder.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            lines = _read(log)
            base = _rate(lines, off0, off1)
            with_spy = _rate(lines, on0, on1)
            windows.append(
                {
                    "rate_without": base,
                    "rate_with": with_spy,
                    "loss": 1 - with_spy / base,
                    "spy_cpu_share": (cpu1 - cpu0) / (on1 - on0),
                }
            )
        # one last window without py-spy, so each "with" sits between two "without"s
        off0 = time.monotonic()
        time.sleep(window)
        last = _rate(_read(log), off0, time.monotonic())
    for i, w in enumerate(windows):
        after = windows[i + 1]["rate_without"] if i + 1 < len(windows) else last
        w["loss"] = 1 - w["rate_with"] / ((w["rate_without"] + after) / 2)
    cpu = statistics.median(w["spy_cpu_share"] for w in windows)
    processes = 1 + (setting.children if "--subprocesses" in setting.flags else 0)
    per_sample = cpu / (setting.rate * processes)
    return {
        "setting": asdict(setting),
        "label": setting.label,
        "windows": windows,
        "spy_cpu_share": cpu,
        "us_per_sample": per_sample * 1e6,
        "loss": statistics.median(w["loss"] for w in windows),
    }


def _fit(rows: list[dict[str, Any]], nonblocking: bool) -> tuple[float, float] | None:
    pts = [
        (r["setting"]["threads"], r["us_per_sample"])
        for r in rows
        if r["setting"]["children"] == 0
        and not r["setting"]["same_core"]
        and r["setting"]["rate"] == 100
        and set(r["setting"]["flags"]) == set(BASE) | ({"--nonblocking"} if nonblocking else set())
    ]
    if len(pts) < 2:
        return None
    mx = statistics.fmean(x for x, _ in pts)
    my = statistics.fmean(y for _, y in pts)
    b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
    return my - b * mx, b


def render(result: dict[str, Any]) -> str:
    out = [
        f"# py-spy's cost per sample ({result['when']})",
        "",
        f"{result['pyspy_version']}, Python {result['python']}, {result['cpus']} CPUs; "
        f"{result['rounds']} windows of {result['window']} s each; command: `{result['command']}`",
        "",
        "| setting | py-spy CPU (% of a core) | µs of py-spy CPU per sample | target's loss |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        out.append(f"| {r['label']} | {r['spy_cpu_share']:.1%} | {r['us_per_sample']:.0f} | {r['loss']:+.1%} |")
    out.append("")
    for name, fit in (("blocking", result["fit_blocking"]), ("nonblocking", result["fit_nonblocking"])):
        if fit:
            out.append(
                f"- {name}: CPU per sample ≈ {fit[0]:.0f} µs + {fit[1]:.1f} µs × threads "
                f"(each idle thread {THREAD_FRAMES} Python frames deep: ≈ {fit[1] / THREAD_FRAMES:.0f} µs per frame)"
            )
    if result.get("demo_idle"):
        row = result["demo_idle"][0]
        out += [
            "",
            f"The demo app, idle, as `loadlab profile` serves it ({row['threads']} threads, "
            f"{row['children']} child processes):",
            "",
            "| recording | py-spy CPU (% of a core) | the app's samplers: the loop's kinds (and, by default, "
            "its stacks) | total |",
            "|---|---|---|---|",
        ]
        for r in result["demo_idle"]:
            app = r.get("app_sampler_cpu_share")
            total = r["spy_cpu_share"] + (app or 0.0)
            app_text = f"{app:.1%}" if app is not None else "—"
            out.append(f"| {r['label']} | {r['spy_cpu_share']:.1%} | {app_text} | {total:.1%} |")
        out.append("")
        if result.get("wakeup_cpu_share") is not None:
            wake, spy = result["wakeup_cpu_share"], result["demo_idle"][-1]["spy_cpu_share"]
            # Since the kinds sampler rides the stall watchdog's thread (which wakes every 10 ms with
            # or without profiling), the loop-stack sampler's SIGALRM is the only wake-up profiling adds.
            wakes = int(result.get("profiling_wakeups", 2))  # 2 in runs from before the field
            out += [
                f"- the floor: a thread that wakes 100 times a second and does nothing costs {wake:.2%} of a "
                f"core here; the default adds {wakes} such wake-up{'s' if wakes > 1 else ''} a tick "
                f"(≥ {wakes * wake:.1%} idle), and with its py-spy ({spy:.1%}) costs no less than "
                f"{wakes * wake + spy:.1%}",
                "",
            ]
    if result.get("child_us_per_sample") is not None:
        out.append(
            f"- an idle child process under `--subprocesses`: ≈ {result['child_us_per_sample']:.0f} µs per sample"
        )
    return "\n".join(out) + "\n"


# The demo app, idle, as `loadlab profile` serves it: what each way of recording costs.
# label -> (py-spy's flags, children by their own recorders, py-spy's rate, the loop by the app's sampler,
# py-spy on the server only once a thread besides the loop runs: loadlab.recording.ThreadWatch)
DEMO_SETTINGS: dict[str, tuple[tuple[str, ...], bool, int, bool, bool]] = {
    "--idle --threads --subprocesses, 100 Hz (before issue 18)": ((*BASE, "--subprocesses"), False, 100, False, False),
    "--idle --threads, the server's process only, 100 Hz": (BASE, False, 100, False, False),
    "the server's process at 100 Hz, children by their own recorders (--loop-by-pyspy)": (
        BASE, True, 100, False, False,
    ),
    "the loop by the app's sampler at 100 Hz, py-spy 20 Hz --nonblocking from the start, children by their own "
    "(--pyspy-from-start)": ((*BASE, "--nonblocking"), True, 20, True, False),
    "the default: the same, py-spy only once a thread besides the loop runs (the watch's CPU counted with it)": (
        (*BASE, "--nonblocking"), True, 20, True, True,
    ),
}  # fmt: skip


def _window_cpu(procs: list[psutil.Process], window: float) -> float:
    """The processes' CPU over ``window`` seconds, as a share of one core."""
    t0, cpu0 = time.monotonic(), sum(_cpu(p) for p in procs)
    time.sleep(window)
    t1, cpu1 = time.monotonic(), sum(_cpu(p) for p in procs)
    return (cpu1 - cpu0) / (t1 - t0)


def wakeup_cost(window: float, hz: float = 100.0) -> float:
    """A thread of this process that wakes ``hz`` times a second and does nothing: its CPU, as a
    share of one core. Each of the app's samplers wakes that often, whatever it then does."""
    import threading

    stop = threading.Event()

    def tick() -> None:
        while not stop.is_set():
            time.sleep(1 / hz)

    thread = threading.Thread(target=tick, daemon=True)
    c0, t0 = time.process_time(), time.monotonic()
    thread.start()
    time.sleep(window)
    stop.set()
    thread.join()
    return (time.process_time() - c0) / (time.monotonic() - t0)


def demo_idle(*, window: float, rounds: int, work: Path) -> list[dict[str, Any]]:
    """What recording costs on the idle demo server, per way of recording: py-spy's CPU, and the
    app's own samplers' (each the server's CPU over the same instrumented server without any): the
    loop's kinds sampler, in every way of recording since before issue 18, and by default its
    loop-stack sampler too."""
    from benchmarks._measure import INSTRUMENTED_APP, Pinning, server
    from loadlab.instrument import LOOP_SAMPLE_ENV, LOOP_STACKS_ENV
    from loadlab.runner import LOOP_SAMPLE_HZ, PROFILE_STALL_MS

    spy = pyspy_binary() or "py-spy"
    bare_env = {"LOADLAB_STALL_MS": str(PROFILE_STALL_MS)}
    env = {**bare_env, LOOP_SAMPLE_ENV: str(LOOP_SAMPLE_HZ)}
    rows = []
    pin = Pinning(None, None, "not pinned")
    with (
        server(INSTRUMENTED_APP, pin, work, env=bare_env) as bare,
        server(INSTRUMENTED_APP, pin, work, env=env) as plain,
        server(INSTRUMENTED_APP, pin, work, env={**env, LOOP_STACKS_ENV: "100"}) as stacked,
    ):
        time.sleep(2.0)
        tree = psutil.Process(plain.server_pid)
        threads = tree.num_threads()
        children = len(tree.children(recursive=True))
        # The samplers' own cost: the same idle server with and without them, window after window.
        kinds, both = [], []
        for _ in range(rounds):
            base = _window_cpu([psutil.Process(bare.server_pid)], window)
            kinds.append(_window_cpu([tree], window) - base)
            both.append(_window_cpu([psutil.Process(stacked.server_pid)], window) - base)
        kinds_cost, app_cost = statistics.median(kinds), statistics.median(both)
        started = 0  # windows in which an on-demand py-spy started
        for label, (flags, split, rate, by_app, on_demand) in DEMO_SETTINGS.items():
            s = stacked if by_app else plain
            shares = []
            for _ in range(rounds):
                out = work / f"demo-{time.monotonic_ns()}.raw.txt"
                argv = [spy, "record", "--rate", str(rate), *flags, "--format", "raw", "--output", str(out)]
                recorders = ChildRecorders(out, 100, work / "children.log", on_demand=on_demand) if split else None
                main = ManagedProcess([*argv, "--pid", str(s.server_pid)], name="py-spy", log_path=work / "py-spy.log")
                watch = None
                try:
                    if on_demand:  # as the harness does it: the watch starts py-spy if a thread runs
                        ignore = threads_to_ignore(s.url + "/debug") or frozenset()
                        watch = ThreadWatch(s.server_pid, ignore, main.start)
                        watch.watch()
                    else:
                        main.start()
                    if recorders is not None:
                        recorders.watch(lambda s=s: s.server_pid)
                    time.sleep(1.5)  # attached, children found, symbols read
                    spies = [main.pid] if main.popen is not None else []
                    procs = [psutil.Process(p) for p in [*spies, *(recorders.pids if recorders else [])]]
                    ident = watch._thread.ident if watch is not None else None
                    clock = time.pthread_getcpuclockid(ident) if ident is not None else None
                    watch0 = time.clock_gettime(clock) if clock is not None else 0.0
                    shares.append(_window_cpu(procs, window))
                    if clock is not None:  # the watch reads /proc from this process: its cost too
                        shares[-1] += (time.clock_gettime(clock) - watch0) / window
                    if main.popen is not None and not spies:  # started during the window: all of it counts
                        shares[-1] += _cpu(psutil.Process(main.pid)) / window
                    started += bool(on_demand and main.popen is not None)
                finally:
                    if recorders is not None:
                        recorders.stop()
                    main.stop()  # before the watch: the thread that started py-spy is its parent-death link
                    if watch is not None:
                        watch.stop()
                    main.stop()  # one the watch started meanwhile
            row: dict[str, Any] = {
                "label": label,
                "threads": threads,
                "children": children,
                "spy_cpu_share": statistics.median(shares),
                "windows": shares,
            }
            if on_demand:
                row["pyspy_started_in_windows"] = started
            row["app_sampler_cpu_share"] = app_cost if by_app else kinds_cost
            rows.append(row)
            extra = f" + the app's samplers {row['app_sampler_cpu_share']:.1%}"
            print(f"demo, idle: {label}: py-spy {rows[-1]['spy_cpu_share']:.1%}{extra} of a core", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--window", type=float, default=3.0, help="seconds per window (default 3)")
    parser.add_argument("--rounds", type=int, default=2, help="windows with py-spy per setting (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only-demo", action="store_true", help="measure only the idle demo server")
    args = parser.parse_args()
    cores = tuple(sorted(os.sched_getaffinity(0)))[:2]
    pin = (cores[0], cores[1]) if len(cores) == 2 else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyspy-cost-") as tmp:
        for s in [] if args.only_demo else SETTINGS:
            print(f"measuring {s.label} …", file=sys.stderr, flush=True)
            rows.append(measure(s, window=args.window, rounds=args.rounds, work=Path(tmp), cores=pin))
        demo = demo_idle(window=max(args.window, 5.0), rounds=args.rounds, work=Path(tmp))
        wakeup = statistics.median(wakeup_cost(max(args.window, 5.0)) for _ in range(args.rounds))
    child = None
    if rows:
        base = next(
            r
            for r in rows
            if r["setting"]["threads"] == 10 and tuple(r["setting"]["flags"]) == BASE and not r["setting"]["same_core"]
        )
        sub = next(r for r in rows if r["setting"]["children"] == 3 and "--nonblocking" not in r["setting"]["flags"])
        child = (sub["spy_cpu_share"] - base["spy_cpu_share"]) / (3 * 100) * 1e6
    version = subprocess.run([pyspy_binary() or "py-spy", "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "pyspy_version": version,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "pinning": pin,
        "window": args.window,
        "rounds": args.rounds,
        "command": "python -m benchmarks.pyspy_cost " + " ".join(sys.argv[1:]),
        "rows": rows,
        "fit_blocking": _fit(rows, nonblocking=False),
        "fit_nonblocking": _fit(rows, nonblocking=True),
        "child_us_per_sample": child,
        "demo_idle": demo,
        "wakeup_cpu_share": wakeup,
        "profiling_wakeups": 1,  # the loop-stack sampler's; the kinds sampler rides the watchdog's thread
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"pyspy-cost-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(render(result))
    print(render(result))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
