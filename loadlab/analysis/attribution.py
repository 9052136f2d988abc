"""From a parsed profile to ``run.json``'s ``analysis``: what the loop did, who blocked it, how
busy the threadpool was. Pure functions: the same profile always gives the same answer."""

from __future__ import annotations

import linecache
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from loadlab.analysis.frameworks import ANYIO_POOL, POOL_SIZES, detect_framework, layer_shares, thread_pools
from loadlab.analysis.places import AppMap, Place, load_app_map, place_of
from loadlab.analysis.stacks import (
    Frame,
    Profile,
    Role,
    SampleKind,
    Stack,
    ThreadKey,
    classify_sample,
    enclosing_name,
    has_native_frames,
    innermost_app_frame,
    is_idle_sample,
    is_library_file,
    is_loop_callback,
    is_selector_wait,
    is_startup,
)

TOP_BLOCKERS = 10


def loop_blockers(stacks: Iterable[Stack], has_native: bool, app: AppMap, loop_samples: int) -> list[dict[str, Any]]:
    """Application functions the loop was running (not parked), largest share first, each with
    where it sits in the app (handler, dependency, middleware, background task, start-up) and the
    routes it hits. A generator expression, lambda or nested function is its enclosing function."""
    counts: Counter[tuple[str, str]] = Counter()
    lines: dict[tuple[str, str], Counter[int]] = {}
    kinds: dict[tuple[str, str], Counter[str]] = {}
    places: dict[tuple[str, str], Counter[Place]] = {}
    for s in stacks:
        if not is_loop_callback(s.frames):
            continue
        app_frame = innermost_app_frame(s.frames)
        key = (enclosing_name(app_frame.name), app_frame.file) if app_frame else ("(library or runtime code)", "")
        counts[key] += s.count
        lines.setdefault(key, Counter())[app_frame.line if app_frame and app_frame.line else 0] += s.count
        kinds.setdefault(key, Counter())[classify_sample(s.frames, has_native).value] += s.count
        where = place_of(s.frames, app) if app_frame else Place("unknown", None, ())
        places.setdefault(key, Counter())[where] += s.count
    out = []
    for key, n in counts.most_common(TOP_BLOCKERS):
        where = _merged_place(places[key])
        out.append(
            {
                "function": key[0],
                "file": key[1] or None,
                "line": lines[key].most_common(1)[0][0] or None,
                "handler": where.function,
                "route": where.routes[0] if len(where.routes) == 1 else None,
                "place": where.place,
                "routes": list(where.routes),
                "share": round(n / loop_samples, 4) if loop_samples else 0.0,
                "samples": n,
                "kind": kinds[key].most_common(1)[0][0],
            }
        )
    return out


def _merged_place(seen: Counter[Place]) -> Place:
    """The place a function was found in most, with every route it hit there: a helper shared by
    two handlers blocks both routes."""
    kind = Counter({p.place: 0 for p in seen})
    for p, n in seen.items():
        kind[p.place] += n
    place = kind.most_common(1)[0][0]
    same = {p: n for p, n in seen.items() if p.place == place}
    function = max(same, key=lambda p: same[p]).function
    routes = sorted({r for p in same for r in p.routes})
    return Place(place, function, tuple(routes))


# The loop sampler's samples of a function needed before its kinds decide a blocker's, and its
# computing samples before they say whether it computed without the GIL.
MIN_SAMPLER_SAMPLES = 5
# cpu samples in which the loop computed without the GIL, for the call to count as GIL-free C.
GIL_FREE_SHARE = 0.6


# A function the loop sampler caught this share (or less) of the times py-spy's share predicts
# kept the GIL all along: the sampler, Python itself, only ever got the GIL around it.
RARELY_CAUGHT = 0.3
MIN_EXPECTED_SAMPLES = 10


def _kinds_from_samples(blockers: list[dict[str, Any]], samples: dict[str, Any] | None) -> None:
    """Without native frames a py-spy sample cannot tell waiting from computing; the app's loop
    sampler can (see ``instrument.LoopSampler``). Give each blocker its kinds, as shares, and the
    share of its computing done without the GIL; a background task also gets the route that
    queued it (the request the sampler saw it run for)."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for sample in (samples or {}).get("samples", []):
        by_key.setdefault((str(sample["function"]), str(sample["file"])), []).append(sample)
    ticks = int((samples or {}).get("ticks") or 0)
    for blocker in blockers:
        if not blocker.get("file"):
            continue
        mine = by_key.get((blocker["function"], blocker["file"]), [])
        totals = {k: sum(int(m[k]) for m in mine) for k in ("cpu", "wait", "gil", "cpu_gil_free")}
        n = totals["cpu"] + totals["wait"] + totals["gil"]
        expected = blocker["share"] * ticks
        if expected >= MIN_EXPECTED_SAMPLES and n < RARELY_CAUGHT * expected:
            # py-spy saw the loop here often; the sampler, which needs the GIL to look, hardly
            # ever: the function kept the GIL while it ran (Python, or C such as json.dumps).
            if blocker["kind"] == SampleKind.UNKNOWN.value:
                blocker["kind"] = "cpu"
                blocker["kind_from"] = "loop sampler: kept the GIL"
            blocker["gil_released"] = False
            continue
        if n < MIN_SAMPLER_SAMPLES:
            continue
        blocker["kinds"] = {k: round(totals[k] / n, 3) for k in ("cpu", "wait", "gil")}
        if totals["cpu"] >= MIN_SAMPLER_SAMPLES:
            blocker["gil_released"] = totals["cpu_gil_free"] / totals["cpu"] >= GIL_FREE_SHARE
        if blocker["kind"] == SampleKind.UNKNOWN.value:
            blocker["kind"] = max(("cpu", "wait", "gil"), key=lambda k: totals[k])
            blocker["kind_from"] = "loop sampler"
        if blocker.get("place") == "background" and not blocker.get("routes"):
            routes: Counter[str] = Counter()
            for m in mine:
                if m["route"]:
                    routes[str(m["route"])] += int(m["cpu"]) + int(m["wait"]) + int(m["gil"])
            blocker["routes"] = [r for r, _ in routes.most_common()]
            blocker["route"] = blocker["routes"][0] if len(blocker["routes"]) == 1 else None


def _kinds_from_stalls(blockers: list[dict[str, Any]], stalls: list[dict[str, Any]]) -> None:
    """Without native frames or the loop sampler, the stall watchdog's verdict (the loop thread's
    CPU time during each stall it caught; a stall can span several blockers back to back)."""
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
    profile: Profile,
    routes_file: Path | None = None,
    stalls: list[dict[str, Any]] | None = None,
    loop_samples: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``analysis`` section of ``run.json``. Where the profile has no native frames, the
    app's loop sampler (``loop_samples``) and then its stall watchdog (``stalls``) say whether
    each blocker waited or computed."""
    native = has_native_frames(profile)
    app = load_app_map(routes_file)
    roles = process_roles(profile)
    # The loops that serve requests: a master's own loop (gunicorn runs a control loop) is not one.
    loop_keys = {
        k for k, t in profile.threads.items() if t.role is Role.EVENT_LOOP and roles[k.pid] in ("server", "worker")
    }
    loop = _loop_section(profile, loop_keys, native, app, stalls or [], loop_samples)
    per_thread = max((t.samples for t in profile.threads.values()), default=0)
    worker_busy: Counter[str] = Counter()
    worker_locked: Counter[str] = Counter()
    worker_lock_at: dict[str, Counter[tuple[str, int]]] = {}
    worker_routes: dict[str, Counter[str | None]] = {}
    worker_pool: dict[str, Counter[str]] = {}
    framework = detect_framework(profile, app.packages)
    pool_of = thread_pools(profile, framework)
    pool_busy: Counter[str] = Counter()
    thread_busy: Counter[ThreadKey] = Counter()
    for s in profile.stacks:
        thread = profile.threads[s.thread]
        pool = pool_of.get(s.thread)
        if pool is not None and not _worker_waiting_for_work(s.frames, native, thread):
            app_frame = innermost_app_frame(s.frames)
            name = enclosing_name(app_frame.name) if app_frame else "(library code)"
            worker_busy[name] += s.count
            pool_busy[pool] += s.count
            thread_busy[s.thread] += s.count
            worker_pool.setdefault(name, Counter())[pool] += s.count
            where = place_of(s.frames, app)
            worker_routes.setdefault(name, Counter())[where.routes[0] if len(where.routes) == 1 else None] += s.count
            lock_at = entering_lock(s.frames)
            if lock_at is not None:
                worker_lock_at.setdefault(name, Counter())[lock_at] += s.count
            if lock_at is not None or _waits_on_lock_or_queue(s.frames):
                worker_locked[name] += s.count
    busy_workers = sum(worker_busy.values())
    # AnyIO's workers are all the app's; an executor thread that never ran anything may be the
    # server's or a library's (uvloop's getaddrinfo thread): only the ones that worked count.
    pool_of = {k: p for k, p in pool_of.items() if p == ANYIO_POOL or thread_busy[k]}

    return {
        "native": native,
        "samples": profile.total,
        "framework": framework,
        "threads": [
            {"pid": t.key.pid, "tid": t.key.tid, "name": t.name, "role": t.role.value, "samples": t.samples}
            for t in sorted(profile.threads.values(), key=lambda t: (t.role.value, t.key.pid, t.key.tid))
        ],
        "loop": loop,
        "processes": _processes(profile, roles, native, app, stalls or [], loop_samples),
        "threadpool": {
            "workers_seen": len(pool_of),
            "average_busy_workers": round(busy_workers / per_thread, 2) if per_thread else 0.0,
            # Each pool the app's sync code ran in: AnyIO's, asgiref's, the loop's default executor.
            "pools": [
                {
                    "pool": pool,
                    "size": POOL_SIZES.get(pool),
                    "threads_seen": sum(1 for p in pool_of.values() if p == pool),
                    "average_busy_workers": round(pool_busy[pool] / per_thread, 2) if per_thread else 0.0,
                }
                for pool in sorted(set(pool_of.values()))
            ],
            "by_function": [
                {
                    "function": f,
                    "route": worker_routes[f].most_common(1)[0][0],
                    "pool": worker_pool[f].most_common(1)[0][0],
                    "average_busy_workers": round(n / per_thread, 2) if per_thread else 0.0,
                    # Share of this function's busy samples spent waiting for a lock or a queue:
                    # high when a resource pool, not the threads, is what requests queue for.
                    "lock_wait_share": round(worker_locked[f] / n, 3) if n else 0.0,
                    # Where its threads waited to enter a lock (a `with lock:` waits in C, with no
                    # frame of threading's), and the samples spent past it: the lock's hold time.
                    "lock": _lock_site(worker_lock_at.get(f)),
                    "held_samples": n - worker_locked[f],
                }
                for f, n in worker_busy.most_common(TOP_BLOCKERS)
            ],
        },
    }


def _loop_section(
    profile: Profile,
    loop_keys: set[ThreadKey],
    native: bool,
    app: AppMap,
    stalls: list[dict[str, Any]],
    loop_samples: dict[str, Any] | None = None,
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
    blockers = loop_blockers(loop_stacks, native, app, loop_total)
    _kinds_from_samples(blockers, loop_samples)
    _kinds_from_stalls(blockers, stalls)
    ticks = int((loop_samples or {}).get("ticks") or 0)
    return {
        "threads": len(loop_keys),
        "samples": loop_total,
        "startup_samples": startup,
        "busy_share": round(busy / loop_total, 4) if loop_total else None,
        "kinds": {k: kinds.get(k, 0) for k in (m.value for m in SampleKind)},
        "blockers": blockers,
        # What "(library or runtime code)" was: the loop samples with no frame of the app, per
        # layer of the framework's (and the server's) own request handling.
        "framework_layers": layer_shares(
            (s for s in loop_stacks if is_loop_callback(s.frames) and innermost_app_frame(s.frames) is None), loop_total
        ),
        # The loop sampler's looks that found the loop waiting for a GIL other threads held.
        "gil_wait_share": round(int(loop_samples.get("gil_ticks") or 0) / ticks, 3) if ticks and loop_samples else None,
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
    profile: Profile,
    roles: dict[int, str],
    native: bool,
    app: AppMap,
    stalls: list[dict[str, Any]],
    loop_samples: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """One entry per profiled process, with loop figures for the ones that serve requests."""
    out = []
    for pid in sorted(roles):
        threads = [t for t in profile.threads.values() if t.key.pid == pid]
        entry: dict[str, Any] = {"pid": pid, "role": roles[pid], "threads": len(threads)}
        loops = {t.key for t in threads if t.role is Role.EVENT_LOOP}
        if loops and roles[pid] in ("server", "worker"):
            section = _loop_section(profile, loops, native, app, stalls, loop_samples)
            entry.update(busy_share=section["busy_share"], blockers=section["blockers"][:3])
        out.append(entry)
    return out


# A source line that waits to enter a lock or a pooled resource when a thread stops on it.
_LOCK_LINE = re.compile(
    r"^\s*(async\s+)?with\b[^#]*\b\w*(lock|mutex|semaphore|sem|pool|guard)\w*\b|\.acquire\(", re.IGNORECASE
)


def entering_lock(frames: tuple[Frame, ...]) -> tuple[str, int] | None:
    """``(file, line)`` when the innermost Python frame is application code stopped on a line that
    enters a lock (``with lock:``, ``lock.acquire()``): a ``with`` waits in C, so no frame of
    ``threading`` shows it. Read from the app's source, as the profile names file and line."""
    for frame in reversed(frames):
        if frame.native:
            continue
        if is_library_file(frame.file) or not frame.line:
            return None
        return (frame.file, frame.line) if _LOCK_LINE.search(linecache.getline(frame.file, frame.line)) else None
    return None


def _lock_site(sites: Counter[tuple[str, int]] | None) -> dict[str, Any] | None:
    if not sites:
        return None
    (file, line), _ = sites.most_common(1)[0]
    return {"file": file, "line": line, "code": linecache.getline(file, line).strip()}


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
    """A pool thread with no job: its innermost Python frame is the worker loop's queue get (AnyIO's
    worker, or a ``concurrent.futures`` thread: asgiref's executors and the loop's default one)."""
    for frame in reversed(frames):
        if frame.native:
            continue
        if frame.file.replace("\\", "/").endswith(("queue.py", "threading.py")):
            continue
        f = frame.file.replace("\\", "/")
        return ("anyio/_backends" in f and frame.name.endswith("WorkerThread.run")) or (
            f.endswith("concurrent/futures/thread.py") and frame.name == "_worker"
        )
    return is_idle_sample(thread, frames, native)
