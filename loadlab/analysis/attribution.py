"""From a parsed profile to ``run.json``'s ``analysis``: what the loop did, who blocked it, how
busy the threadpool was. Pure functions: the same profile always gives the same answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loadlab.analysis.stacks import (
    Frame,
    Profile,
    Role,
    SampleKind,
    Stack,
    ThreadKey,
    classify_sample,
    has_native_frames,
    innermost_app_frame,
    is_idle_sample,
    is_loop_callback,
    is_selector_wait,
    is_startup,
)
from loadlab.results import StoredDataError, read_json

TOP_BLOCKERS = 10


@dataclass(frozen=True)
class RouteInfo:
    path: str
    function: str
    file: str


def load_routes(path: Path | None) -> list[RouteInfo]:
    """The app's routes as the instrumentation listed them (``routes.json``), if present."""
    if path is None or not path.exists():
        return []
    data = read_json(path)
    try:
        return [RouteInfo(str(r["path"]), str(r["function"]), str(r["file"])) for r in data.get("routes", [])]
    except (AttributeError, KeyError, TypeError):
        raise StoredDataError(f'{path}: expected {{"routes": [{{"path", "function", "file"}}, …]}}') from None


def _handler(frames: tuple[Frame, ...], routes: list[RouteInfo]) -> tuple[str | None, str | None]:
    """The route endpoint a stack runs under, and its path; else the outermost app frame."""
    by_code = {(r.function, r.file): r.path for r in routes}
    outermost: str | None = None
    for frame in frames:  # outermost first
        path = by_code.get((frame.name.rsplit(".", 1)[-1], frame.file))
        if path is not None:
            return frame.name, path
        if outermost is None and innermost_app_frame((frame,)) is not None:
            outermost = frame.name
    return outermost, None


def loop_blockers(
    stacks: Iterable[Stack], has_native: bool, routes: list[RouteInfo], loop_samples: int
) -> list[dict[str, Any]]:
    """Application functions the loop was running (not parked), largest share first."""
    counts: Counter[tuple[str, str]] = Counter()
    lines: dict[tuple[str, str], Counter[int]] = {}
    kinds: dict[tuple[str, str], Counter[str]] = {}
    handlers: dict[tuple[str, str], Counter[tuple[str | None, str | None]]] = {}
    for s in stacks:
        if not is_loop_callback(s.frames):
            continue
        app = innermost_app_frame(s.frames)
        key = (app.name, app.file) if app else ("(library or runtime code)", "")
        counts[key] += s.count
        lines.setdefault(key, Counter())[app.line if app and app.line else 0] += s.count
        kinds.setdefault(key, Counter())[classify_sample(s.frames, has_native).value] += s.count
        handlers.setdefault(key, Counter())[_handler(s.frames, routes) if app else (None, None)] += s.count
    out = []
    for key, n in counts.most_common(TOP_BLOCKERS):
        handler, route = handlers[key].most_common(1)[0][0]
        out.append(
            {
                "function": key[0],
                "file": key[1] or None,
                "line": lines[key].most_common(1)[0][0] or None,
                "handler": handler,
                "route": route,
                "share": round(n / loop_samples, 4) if loop_samples else 0.0,
                "samples": n,
                "kind": kinds[key].most_common(1)[0][0],
            }
        )
    return out


def _kinds_from_stalls(blockers: list[dict[str, Any]], stalls: list[dict[str, Any]]) -> None:
    """Without native frames a sample cannot tell waiting from computing; the app's stall
    watchdog can (it read the loop thread's CPU time during each stall). Use its verdict."""
    for blocker in blockers:
        if blocker["kind"] != SampleKind.UNKNOWN.value:
            continue
        votes = Counter(
            s.get("kind", "unknown")
            for s in stalls
            if s.get("function") == blocker["function"] and s.get("kind") in ("cpu", "wait")
        )
        if votes:
            blocker["kind"] = votes.most_common(1)[0][0]
            blocker["kind_from"] = "stall watchdog"


def analyse_profile(
    profile: Profile, routes_file: Path | None = None, stalls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The ``analysis`` section of ``run.json``. ``stalls`` (the app's ``/debug/stalls``) fill in
    waiting vs computing where the profile has no native frames."""
    native = has_native_frames(profile)
    routes = load_routes(routes_file)
    roles = process_roles(profile)
    # The loops that serve requests: a master's own loop (gunicorn runs a control loop) is not one.
    loop_keys = {
        k for k, t in profile.threads.items() if t.role is Role.EVENT_LOOP and roles[k.pid] in ("server", "worker")
    }
    loop = _loop_section(profile, loop_keys, native, routes, stalls or [])
    per_thread = max((t.samples for t in profile.threads.values()), default=0)
    worker_busy: Counter[str] = Counter()
    worker_locked: Counter[str] = Counter()
    worker_routes: dict[str, Counter[str | None]] = {}
    workers = [t for t in profile.threads.values() if t.role is Role.ANYIO_WORKER]
    for s in profile.stacks:
        thread = profile.threads[s.thread]
        if thread.role is Role.ANYIO_WORKER and not _worker_waiting_for_work(s.frames, native, thread):
            app = innermost_app_frame(s.frames)
            name = app.name if app else "(library code)"
            worker_busy[name] += s.count
            worker_routes.setdefault(name, Counter())[_handler(s.frames, routes)[1]] += s.count
            if _waits_on_lock_or_queue(s.frames):
                worker_locked[name] += s.count
    busy_workers = sum(worker_busy.values())

    return {
        "native": native,
        "samples": profile.total,
        "threads": [
            {"pid": t.key.pid, "tid": t.key.tid, "name": t.name, "role": t.role.value, "samples": t.samples}
            for t in sorted(profile.threads.values(), key=lambda t: (t.role.value, t.key.pid, t.key.tid))
        ],
        "loop": loop,
        "processes": _processes(profile, roles, native, routes, stalls or []),
        "threadpool": {
            "workers_seen": len(workers),
            "average_busy_workers": round(busy_workers / per_thread, 2) if per_thread else 0.0,
            "by_function": [
                {
                    "function": f,
                    "route": worker_routes[f].most_common(1)[0][0],
                    "average_busy_workers": round(n / per_thread, 2) if per_thread else 0.0,
                    # Share of this function's busy samples spent waiting for a lock or a queue:
                    # high when a resource pool, not the threads, is what requests queue for.
                    "lock_wait_share": round(worker_locked[f] / n, 3) if n else 0.0,
                }
                for f, n in worker_busy.most_common(TOP_BLOCKERS)
            ],
        },
    }


def _loop_section(
    profile: Profile,
    loop_keys: set[ThreadKey],
    native: bool,
    routes: list[RouteInfo],
    stalls: list[dict[str, Any]],
) -> dict[str, Any]:
    """Busy share, sample kinds and blockers of the given event-loop threads."""
    # Only samples taken while the loop ran count, and not the server's own start-up and
    # shut-down (importing the app, the lifespan): they happen before and after the load.
    loop_stacks, startup = [], 0
    for s in profile.stacks:
        if s.thread not in loop_keys or not (is_loop_callback(s.frames) or is_selector_wait(s.frames)):
            continue
        if is_startup(s.frames):
            startup += s.count
        else:
            loop_stacks.append(s)
    kinds: Counter[str] = Counter()
    for s in loop_stacks:
        kinds[classify_sample(s.frames, native).value] += s.count
    loop_total = sum(kinds.values())
    busy = loop_total - kinds[SampleKind.PARKED.value]
    blockers = loop_blockers(loop_stacks, native, routes, loop_total)
    _kinds_from_stalls(blockers, stalls)
    return {
        "threads": len(loop_keys),
        "samples": loop_total,
        "startup_samples": startup,
        "busy_share": round(busy / loop_total, 4) if loop_total else None,
        "kinds": {k: kinds.get(k, 0) for k in (m.value for m in SampleKind)},
        "blockers": blockers,
    }


def process_roles(profile: Profile) -> dict[int, str]:
    """Each profiled process's role: ``server`` (one process serving), ``master`` (the parent of
    workers), ``worker`` (a child running an event loop), ``process-pool child``, ``other``."""
    parent: dict[int, int | None] = {}
    has_loop: set[int] = set()
    pool: set[int] = set()
    for t in profile.threads.values():
        parent.setdefault(t.key.pid, t.parent_pid)
        if t.role is Role.EVENT_LOOP:
            has_loop.add(t.key.pid)
        elif t.role is Role.POOL_CHILD:
            pool.add(t.key.pid)
    workers = {pid for pid in has_loop if parent[pid] is not None}
    roles = {}
    for pid, ppid in parent.items():
        if pid in workers:
            roles[pid] = "worker"
        elif ppid is None:
            roles[pid] = "master" if any(parent[w] == pid for w in workers) else "server"
        elif pid in pool:
            roles[pid] = "process-pool child"
        else:
            roles[pid] = "other"
    return roles


def _processes(
    profile: Profile, roles: dict[int, str], native: bool, routes: list[RouteInfo], stalls: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """One entry per profiled process, with loop figures for the ones that serve requests."""
    out = []
    for pid in sorted(roles):
        threads = [t for t in profile.threads.values() if t.key.pid == pid]
        entry: dict[str, Any] = {"pid": pid, "role": roles[pid], "threads": len(threads)}
        loops = {t.key for t in threads if t.role is Role.EVENT_LOOP}
        if loops and roles[pid] in ("server", "worker"):
            section = _loop_section(profile, loops, native, routes, stalls)
            entry.update(busy_share=section["busy_share"], blockers=section["blockers"][:3])
        out.append(entry)
    return out


def _waits_on_lock_or_queue(frames: tuple[Frame, ...]) -> bool:
    """The innermost Python frame is a stdlib queue get or lock acquire/wait."""
    for frame in reversed(frames):
        if frame.native:
            continue
        f = frame.file.replace("\\", "/")
        return (f.endswith("/queue.py") and frame.name.endswith(("get", "put"))) or (
            f.endswith("/threading.py") and frame.name.endswith(("wait", "acquire"))
        )
    return False


def _worker_waiting_for_work(frames: tuple[Frame, ...], native: bool, thread: Any) -> bool:
    """An AnyIO worker with no job: its innermost Python frame is the worker loop's queue get."""
    for frame in reversed(frames):
        if frame.native:
            continue
        if frame.file.replace("\\", "/").endswith(("queue.py", "threading.py")):
            continue
        return "anyio/_backends" in frame.file.replace("\\", "/") and frame.name.endswith("WorkerThread.run")
    return is_idle_sample(thread, frames, native)
