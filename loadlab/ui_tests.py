"""``loadlab ui``'s side of each test started from the web UI: record it, then analyse it.

The server runs for the whole session; a test is cut out of it by attaching py-spy
(``py-spy record --pid``) when the test starts and stopping it (SIGINT: py-spy writes what it has)
when the test stops. The app's own records are cut the same way: its loop sampler's counts minus
those at the start, the stalls that began after the start. Locust's figures for the test are
written by :mod:`loadlab.ui_plugin` at the test's end. The folder then goes through the same
analysis as a ``loadlab profile`` run and gets the same artefacts, with ``kind: ui-test``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from pathlib import Path
from typing import Any

import httpx

from loadlab.analysis.health import pyspy_warnings
from loadlab.analysis.places import AppMap, load_app_map, place_of
from loadlab.analysis.stacks import Frame
from loadlab.config import ProfileConfig, run_secrets
from loadlab.measure import (
    ProcessMeter,
    all_stalls,
    loop_samples,
    loop_stacks,
    one_process,
    probe_service_times,
    samples_between,
)
from loadlab.processes import LOCUST_OUTPUTS, PYSPY_STOP_LADDER, ManagedProcess, ProcessError
from loadlab.recording import ChildRecorders, Recording, median_cpu
from loadlab.redact import scrub_folder
from loadlab.report import render_run
from loadlab.results import RAW_PROFILE, StoredDataError, load_run, write_json
from loadlab.runner import Run, _analyse, _collect_locust, _judge_health, _record_failure
from loadlab.ui_page import read_json, test_folders

TEST_FILE = "ui-test.json"
LIVE_FILE = "live.json"
TICK_S = 1.0
LIVE_MIN_SHARE = 0.01  # the live view lists what held the loop at least this share of the test so far
OUTPUTS_WAIT_S = 20.0  # Locust writes a test's outputs at its end; a test that never gets them is still analysed


@dataclasses.dataclass
class Session:
    """What every test of one ``loadlab ui`` shares: the config, the server and its debug routes."""

    folder: Path
    cfg: ProfileConfig
    server_pid: int
    base: str
    debug_prefix: str | None
    locust_pid: int | None = None
    web_url: str | None = None
    canary_idle: dict[str, float] | None = None

    @property
    def debug(self) -> str | None:
        return None if self.debug_prefix is None else f"{self.base}{self.debug_prefix}/debug"

    @functools.cached_property
    def recording(self) -> Recording:
        """Planned once per session (each test and the idle baseline read it). py-spy and each
        child's recorder attach at each test's start, not on demand: a test's profile is whole."""
        return dataclasses.replace(Recording.of(self.cfg), on_demand=False)


def live_blockers(delta: dict[str, Any], app: AppMap, limit: int = 5) -> tuple[float | None, list[dict[str, Any]]]:
    """The loop's busy share and its top blockers so far, from the sampler's counts alone."""
    ticks = int(delta.get("ticks") or 0)
    if ticks <= 0:
        return None, []
    busy = 1.0 - int(delta.get("outside_app") or 0) / ticks
    rows: list[dict[str, Any]] = []
    for s in delta.get("samples", []):
        kinds = {"cpu": s["cpu"], "wait": s["wait"], "gil": s["gil"]}
        total = sum(kinds.values())
        if total / ticks < LIVE_MIN_SHARE or len(rows) == limit:
            break
        place = place_of((Frame(s["function"], s["file"], s["line"]),), app).place
        rows.append(
            {"function": s["function"], "file": s["file"], "line": s["line"], "route": s["route"],
             "kind": max(kinds, key=lambda k: kinds[k]), "share": round(total / ticks, 4),
             "place": None if place == "unknown" else place}
        )  # fmt: skip
    return round(busy, 4), rows


def debug_get(
    client: httpx.Client, debug: str | None, what: str, timeout: float = 2.0, **params: Any
) -> dict[str, Any] | None:
    """One of the app's debug routes as JSON, or None (no instrumentation, or no answer in time)."""
    if debug is None:
        return None
    with contextlib.suppress(httpx.HTTPError, ValueError):
        answer: dict[str, Any] = client.get(f"{debug}/{what}", params=params, timeout=timeout).json()
        return answer
    return None


class ActiveTest:
    """One test from its start (py-spy attached) to its analysed run folder."""

    def __init__(
        self,
        session: Session,
        folder: Path,
        info: dict[str, Any],
        samples_before: dict[int, dict[str, Any]] | None,
        stacks_before: dict[str, Any] | None = None,
    ) -> None:
        self.session, self.folder, self.info = session, folder, info
        cfg = session.cfg
        self.cfg = dataclasses.replace(
            cfg,
            users=int(info.get("users") or cfg.users),
            spawn_rate=float(info.get("spawn_rate") or cfg.spawn_rate),
            tags=tuple(info.get("tags") or ()),
            variants=(),
            out=folder,
        )
        self.run = Run(folder, self.cfg, None, kind="ui-test")
        self.run.data["ui"] = info
        self.run.data["load_started_at"] = info.get("started_at")
        self.run.data["pids"] = {"server": session.server_pid, "locust": session.locust_pid}
        self.run.data["server"] = {"url": session.base, "debug_prefix": session.debug_prefix}
        if session.canary_idle is not None:
            self.run.data["canary_idle"] = session.canary_idle
        self.client = httpx.Client(timeout=2.0)
        # Taken while the app was idle, before the test: once users run, a loop they block may
        # answer too late, and a start missed would put the whole session into this test.
        self.samples_before = samples_before
        self.started = time.monotonic()
        self.last_tick = 0.0
        self.app = load_app_map(session.folder / "routes.json")
        self.spy: ManagedProcess | None = None
        self.children: ChildRecorders | None = None
        self.run.data["phase"] = "load"
        if self.cfg.profile:
            # As `loadlab profile` records (loadlab.recording): the loop by the app's sampler, the
            # server's process by a non-pausing py-spy, each child by a recorder of its own.
            argv = session.recording.pyspy_argv(folder / RAW_PROFILE, pid=session.server_pid)
            self.spy = ManagedProcess(
                argv, name="py-spy", log_path=folder / "server.log", stop_ladder=PYSPY_STOP_LADDER
            )
            self.spy.start()
            spy_started = time.monotonic()
            self.run.data["pids"]["profiler"] = self.spy.pid
            self.children = session.recording.child_recorders(folder / RAW_PROFILE, folder / "py-spy-children.log")
            if self.children is not None:
                self.children.main_started = spy_started
                # Taken with the loop samples, for the same reason: the loop's stacks so far.
                self.children.loop_stacks_before = stacks_before
                self.children.watch(lambda: session.server_pid)
        self.meter = ProcessMeter(
            {"server": session.server_pid, "locust": session.locust_pid}, {"profiler": self._profiler_pids}
        )
        self.run.save()

    def _profiler_pids(self) -> list[int]:
        return ([self.spy.pid] if self.spy else []) + (self.children.pids if self.children else [])

    def _get(self, what: str, timeout: float = 2.0, **params: Any) -> dict[str, Any] | None:
        return debug_get(self.client, self.session.debug, what, timeout, **params)

    def tick(self) -> None:
        """Once a second while the test runs: a time-series point and the live view."""
        now = time.monotonic()
        if now - self.last_tick < TICK_S:
            return
        self.last_tick = now
        point: dict[str, Any] = {"t": round(now - self.started, 2)}
        loop = self._get("loop", window_s=1)
        if loop is None and self.session.debug is not None:
            point["unanswered"] = True
        point.update(loop or {})
        point.update(self.meter.read())
        self.run.data["timeseries"].append(point)
        self.run.save()
        live: dict[str, Any] = {"seconds": round(now - self.started, 1), "blockers": []}
        samples = loop_samples(self.session.debug, self.cfg.workers)
        if samples:
            live["busy_share"], live["blockers"] = live_blockers(
                samples_between(self.samples_before, samples), self.app
            )
        elif self.session.debug is None:
            live["note"] = "the app has no loadlab instrumentation (--no-instrument): the profile comes at the stop"
        else:
            live["note"] = "the loop sampler is off (--no-profile): blockers come from the stall records only"
            live["blockers"] = self._stall_blockers(now - self.started)
        write_json(self.folder / LIVE_FILE, live)

    def _stall_blockers(self, seconds: float) -> list[dict[str, Any]]:
        by_function: dict[tuple[str, str, int], dict[str, Any]] = {}
        for stall in self._stalls():
            key = (str(stall.get("function")), str(stall.get("file")), int(stall.get("line") or 0))
            row = by_function.setdefault(
                key, {"function": key[0], "file": key[1], "line": key[2], "route": stall.get("route"),
                      "kind": stall.get("kind") or "", "ms": 0.0, "place": None}
            )  # fmt: skip
            row["ms"] += float(stall.get("duration_ms") or 0)
        rows = sorted(by_function.values(), key=lambda r: -r["ms"])[:5]
        for row in rows:
            row["share"] = round(min(1.0, row.pop("ms") / 1000 / max(seconds, 0.001)), 4)
        return rows

    def _stalls(self) -> list[dict[str, Any]]:
        started_at = float(self.info.get("started_at") or 0)
        stalls = all_stalls(self.session.debug, self.cfg.workers) or []
        return [s for s in stalls if float(s.get("started_at") or 0) >= started_at]

    def stop_recording(self) -> None:
        """The test stopped (or the UI is stopping): keep the app's records and py-spy's profile."""
        if self.spy is None and "stalls" in self.run.data:
            return
        self.run.data["stalls"] = self._stalls()
        samples = loop_samples(self.session.debug, self.cfg.workers)
        if samples and (merged := samples_between(self.samples_before, samples))["ticks"]:
            self.run.data["loop_samples"] = merged
        if self.spy is not None:
            spy, self.spy = self.spy, None
            if self.children is not None:
                self.children.main_stopped = time.monotonic()  # SIGINT ends its sampling
            self.run.data["profiler_exit_code"] = spy.stop()
            self.run.data["profiler_warnings"] = pyspy_warnings(self.folder / "server.log")
            self.run.artefact("server_log", self.folder / "server.log")
            summary: dict[str, Any] = {"mode": "subprocesses", "rate": self.cfg.rate}
            if self.children is not None:
                self.children.take_loop_stacks(self.session.debug)
                self.children.stop()
                summary = self.children.merge_into(self.folder / RAW_PROFILE)
                self.run.data["profiler_warnings"] += pyspy_warnings(self.children.log_path)
                for pid, recorder in self.children.recorder_pids().items():
                    self.run.data["pids"][f"profiler_of_child_{pid}"] = recorder
            summary["cpu_percent"] = median_cpu(self.run.data.get("timeseries") or [], "profiler")
            self.run.data["profiler"] = summary
        self.run.data["timings_s"]["load"] = round(time.monotonic() - self.started, 3)
        self.run.save()

    def finish(self, interrupted: bool = False) -> None:
        """Analyse and render the test's folder, as ``loadlab profile`` does a run's."""
        self.stop_recording()
        deadline = time.monotonic() + OUTPUTS_WAIT_S
        while time.monotonic() < deadline:
            info = read_json(self.folder / TEST_FILE) or {}
            if info.get("state") == "stopped" and ("outputs" in info and (info["outputs"] or "outputs_error" in info)):
                break
            time.sleep(0.1)
        self.info = read_json(self.folder / TEST_FILE) or self.info
        self.run.data["ui"] = self.info
        duration = _duration(self.info, self.started)
        users = _mean_users(int(self.info.get("users") or self.cfg.users), self.info.get("edits") or [], duration)
        self.cfg = dataclasses.replace(self.cfg, duration=round(duration, 1), users=users)
        self.run.data["config"] = self.cfg.to_dict()
        routes = self.session.folder / "routes.json"
        if routes.is_file():
            (self.folder / "routes.json").write_bytes(routes.read_bytes())
            self.run.artefact("routes", self.folder / "routes.json")
        try:
            self.run.data["locust_exit_code"] = 0
            _collect_locust(self.run)
            if (self.folder / f"{LOCUST_OUTPUTS}_stats.csv").is_file() and not interrupted:
                with contextlib.suppress(httpx.HTTPError):
                    self.run.data["service_probe"] = probe_service_times(
                        self.client, self.session.base, self.folder / LOCUST_OUTPUTS
                    )
            profile = _analyse(self.run, self.folder / RAW_PROFILE) if self.cfg.profile else None
            _judge_health(self.run)
            if interrupted:
                self.run.finish("incomplete", "loadlab ui was stopped while this test ran; what was recorded is kept")
            render_run(self.folder, profile)
        except Exception as exc:  # the folder keeps what it has, and says why it stops there
            _record_failure(self.run, exc)
        finally:
            self.client.close()
            with contextlib.suppress(OSError):
                (self.folder / LIVE_FILE).unlink()
            scrub_folder(self.folder, run_secrets(self.cfg))
            _mark_analysed(self.folder)


def _mark_analysed(folder: Path) -> None:
    """``ui.analysed`` in run.json: the Profile tab stops waiting (the status alone cannot say:
    a run is ``incomplete`` from its first save)."""
    with contextlib.suppress(OSError, StoredDataError):
        data = load_run(folder)
        data.setdefault("ui", {})["analysed"] = True
        write_json(folder / "run.json", data)


def _mean_users(first: int, edits: list[dict[str, Any]], duration: float) -> int:
    """The test's user count, weighted by time when it was changed mid-test (Edit): what the
    theory's closed population was on average."""
    if not edits:
        return first
    total, users, since = 0.0, first, 0.0
    for edit in edits:
        t = min(float(edit["t"]), duration)
        total += users * (t - since)
        users, since = int(edit["users"]), t
    total += users * max(0.0, duration - since)
    return max(1, round(total / duration))


def _duration(info: dict[str, Any], started: float) -> float:
    start, stop = info.get("started_at"), info.get("stopped_at")
    if isinstance(start, (int, float)) and isinstance(stop, (int, float)) and stop >= start:
        return max(0.1, float(stop) - float(start))
    return max(0.1, time.monotonic() - started)


class Recorder:
    """Watches the session folder for tests the web UI starts and stops; one at a time."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.active: ActiveTest | None = None
        self.done: set[str] = set()
        self.finished: list[Path] = []
        self.client = httpx.Client(timeout=2.0)
        self.baseline: dict[int, dict[str, Any]] | None = None
        self.stacks_baseline: dict[str, Any] | None = None
        self.baseline_at = 0.0

    def _idle_baseline(self) -> None:
        """Between tests, once a second: the loop sampler's counts, a test's starting point."""
        if time.monotonic() - self.baseline_at >= TICK_S:
            self.baseline_at = time.monotonic()
            self.baseline = loop_samples(self.session.debug, self.session.cfg.workers) or self.baseline
            if self.session.cfg.profile and self.session.recording.loop_by_app:
                self.stacks_baseline = one_process(loop_stacks(self.session.debug)) or self.stacks_baseline

    def poll(self) -> None:
        if self.active is None:
            self._idle_baseline()
        for folder in test_folders(self.session.folder):
            if folder.name in self.done:
                continue
            info = read_json(folder / TEST_FILE)
            if info is None:
                continue
            if self.active is None or self.active.folder != folder:
                if self.active is not None:  # a new test began before the last one was seen to stop
                    self._finish()
                before = self.baseline or loop_samples(self.session.debug, self.session.cfg.workers)
                self.active = ActiveTest(self.session, folder, info, before, self.stacks_baseline)
                self.baseline = self.stacks_baseline = None  # the next test starts from snapshots taken after this one
            if info.get("state") == "stopped":
                self._finish()
            else:
                self.active.tick()

    def _finish(self, interrupted: bool = False) -> None:
        test, self.active = self.active, None
        if test is None:
            return
        self.done.add(test.folder.name)
        test.finish(interrupted)
        self.finished.append(test.folder)
        status = (read_json(test.folder / "run.json") or {}).get("status")
        print(f"loadlab: {test.folder.name} {status}; report: {test.folder / 'report.html'}", flush=True)

    def stop_recording(self) -> None:
        """Ctrl-C: stop py-spy while the app still answers, before Locust and the server stop."""
        if self.active is not None:
            with contextlib.suppress(ProcessError, httpx.HTTPError, OSError):
                self.active.stop_recording()

    def finish_interrupted(self) -> None:
        if self.active is not None:
            self._finish(interrupted=True)
