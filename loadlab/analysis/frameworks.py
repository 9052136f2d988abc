"""What loadlab knows of each ASGI framework: which one a profile ran, the thread pools its sync
code runs in (and their sizes), and which layer of its own request handling a loop sample with no
application frame was in.

The framework is read from the stacks, not from the app: the package whose frames the server's
threads ran most (``fastapi`` before ``starlette``, which it is built on). A pool is read from the
threads' roles (:class:`loadlab.analysis.stacks.Role`) and, for asgiref, from whether all of its
calls ran on one thread (:func:`loadlab.analysis.stacks.asgiref_shared_threads`).
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections import Counter
from collections.abc import Iterable

from loadlab.analysis.stacks import Frame, Profile, Role, Stack, ThreadKey, asgiref_shared_threads

__all__ = [
    "ANYIO_POOL",
    "ASGIREF_PER_REQUEST",
    "ASGIREF_SHARED",
    "EXECUTOR_FRAMEWORKS",
    "LOOP_EXECUTOR_POOL",
    "POOL_SIZES",
    "detect_framework",
    "framework_layer",
    "thread_pools",
]

# The pools sync code runs in, as the analysis names them.
ANYIO_POOL = "AnyIO threadpool"  # Starlette/FastAPI def routes, run_in_threadpool, anyio.to_thread
LOOP_EXECUTOR_POOL = "loop's default executor"  # loop.run_in_executor(None): Quart, Falcon, Litestar
ASGIREF_SHARED = "asgiref shared thread"  # sync_to_async(thread_sensitive=True) outside Django's handler
ASGIREF_PER_REQUEST = "asgiref per-request threads"  # Django's handler: ThreadSensitiveContext per request


def default_executor_size(cpus: int | None = None) -> int:
    """``concurrent.futures.ThreadPoolExecutor``'s default size, the loop's default executor's."""
    return min(32, (cpus or os.cpu_count() or 1) + 4)


# Servers of each pool: AnyIO's limiter (the run's own figure, from its meter, wins: see
# theory.thread_tokens), the executor's default, asgiref's one thread. A thread per request has
# as many as there are requests in flight: None here, the users in the model.
POOL_SIZES: dict[str, int | None] = {
    ANYIO_POOL: 40,
    LOOP_EXECUTOR_POOL: default_executor_size(),
    ASGIREF_SHARED: 1,
    ASGIREF_PER_REQUEST: None,
}

_LOOP_EXECUTOR_NAME = re.compile(r"^(asyncio|uvloop)_\d+$")


# The frameworks that run sync code in the loop's default executor: Quart's run_sync, Falcon's
# sync_to_async, Litestar's sync_to_thread (on asyncio), Django's sync_to_async(thread_sensitive=False).
EXECUTOR_FRAMEWORKS = ("django", "quart", "falcon", "litestar")


def thread_pools(profile: Profile, framework: str | None = None) -> dict[ThreadKey, str]:
    """Each thread of a pool that runs the app's sync code, with its pool's name. asgiref's calls
    with ``thread_sensitive=False`` go to the loop's default executor (its ``asyncio_N`` threads).
    Under FastAPI, Starlette or a raw app the loop's default executor is not where routes run (the
    app's start-up, uvloop's DNS look-ups): its threads are left out, as before these frameworks."""
    shared = {t.key for t in asgiref_shared_threads(profile).values()}
    out: dict[ThreadKey, str] = {}
    for key, thread in profile.threads.items():
        if thread.role is Role.ANYIO_WORKER:
            out[key] = ANYIO_POOL
        elif thread.role is Role.LOOP_EXECUTOR and framework in EXECUTOR_FRAMEWORKS:
            out[key] = LOOP_EXECUTOR_POOL
        elif thread.role is Role.ASGIREF_EXECUTOR:
            if _LOOP_EXECUTOR_NAME.match(thread.name):
                out[key] = LOOP_EXECUTOR_POOL
            else:
                out[key] = ASGIREF_SHARED if key in shared else ASGIREF_PER_REQUEST
    return out


# The most specific first: FastAPI runs on Starlette, Litestar and Quart bring no Starlette.
FRAMEWORKS = ("fastapi", "litestar", "quart", "falcon", "django", "starlette")


def _package(frame: Frame) -> str | None:
    f = frame.file.replace("\\", "/")
    for marker in ("/site-packages/", "/dist-packages/"):
        _, sep, rest = f.rpartition(marker)
        if sep:
            return rest.split("/", 1)[0]
    return None


def detect_framework(profile: Profile, app_packages: tuple[str, ...] = ()) -> str | None:
    """The web framework the server ran: the most specific of :data:`FRAMEWORKS` whose package
    has frames in the event loop's or the pools' samples, else the one the app is made of
    (``routes.json``'s ``packages``: a framework whose request handling is too quick for any
    sample to catch, as Falcon's on a route that hands all its work to a pool); None for a raw
    ASGI app."""
    seen: Counter[str] = Counter()
    for s in profile.stacks:
        if profile.threads[s.thread].role in (Role.OTHER, Role.POOL_CHILD, Role.EXECUTOR):
            continue
        for pkg in set(FRAMEWORKS).intersection(_package(f) for f in s.frames):
            seen[pkg] += s.count
    for pkg in set(FRAMEWORKS).intersection(app_packages):
        seen[pkg] += 1
    return next((fw for fw in FRAMEWORKS if seen[fw] > 0), None)


# (package, the frame's file under it, function-name pattern) -> layer. The innermost frame that
# matches names the layer; the patterns are py-spy's qualified names (fnmatch).
LAYERS: tuple[tuple[str, str, str, str], ...] = (
    # Django
    ("django", "urls/*", "*", "URL resolution"),
    ("django", "http/response.py", "*", "serialisation / response"),
    ("django", "core/serializers/*", "*", "serialisation / response"),
    ("django", "template/*", "*", "templates"),
    ("django", "db/*", "*", "ORM"),
    ("django", "middleware/*", "*", "middleware"),
    ("django", "contrib/*/middleware.py", "*", "middleware"),
    ("django", "utils/deprecation.py", "MiddlewareMixin*", "middleware"),
    ("django", "core/handlers/exception.py", "*", "middleware"),
    ("django", "core/handlers/base.py", "*", "request handling (view dispatch)"),
    ("django", "http/request.py", "*", "request parsing"),
    ("django", "core/handlers/asgi.py", "*", "request handling (ASGI handler)"),
    ("django", "dispatch/*", "*", "signals"),
    ("asgiref", "*", "*", "sync/async bridge (asgiref)"),
    # FastAPI and Starlette
    ("fastapi", "encoders.py", "*", "serialisation / response"),
    ("fastapi", "routing.py", "serialize_response", "serialisation / response"),
    ("fastapi", "dependencies/*", "*", "dependency injection"),
    ("fastapi", "routing.py", "*", "request handling (endpoint)"),
    ("pydantic", "*", "*", "serialisation / response"),
    ("pydantic_core", "*", "*", "serialisation / response"),
    ("starlette", "responses.py", "*", "serialisation / response"),
    ("starlette", "middleware/*", "*", "middleware"),
    ("starlette", "routing.py", "*", "routing"),
    ("starlette", "requests.py", "*", "request parsing"),
    ("starlette", "*", "*", "request handling"),
    # Litestar
    ("litestar", "_asgi/*", "*", "routing"),
    ("litestar", "middleware/*", "*", "middleware"),
    ("litestar", "response/*", "*", "serialisation / response"),
    ("litestar", "serialization/*", "*", "serialisation / response"),
    ("msgspec", "*", "*", "serialisation / response"),
    ("litestar", "_kwargs/*", "*", "parameter parsing"),
    ("litestar", "*", "*", "request handling"),
    # Quart (and Werkzeug's router under it)
    ("werkzeug", "routing/*", "*", "routing"),
    ("quart", "routing.py", "*", "routing"),
    ("quart", "wrappers/response.py", "*", "serialisation / response"),
    ("quart", "json/*", "*", "serialisation / response"),
    ("quart", "asgi.py", "*", "ASGI adapter"),
    ("quart", "*", "*", "request handling"),
    # Falcon
    ("falcon", "routing/*", "*", "routing"),
    ("falcon", "media/*", "*", "serialisation / response"),
    ("falcon", "asgi/response.py", "*", "serialisation / response"),
    ("falcon", "*", "*", "request handling"),
    # The server and the rest
    ("uvicorn", "*", "*", "server (uvicorn)"),
    ("h11", "*", "*", "server (HTTP parsing)"),
    ("httptools", "*", "*", "server (HTTP parsing)"),
)


def framework_layer(frames: Iterable[Frame]) -> tuple[str, str]:
    """``(package, layer)`` of a loop sample with no application frame, by its innermost frame
    that :data:`LAYERS` knows; loadlab's own instrumentation and asyncio's machinery otherwise."""
    for frame in reversed(tuple(frames)):
        f = frame.file.replace("\\", "/")
        pkg = _package(frame)
        if pkg is None:
            if "/loadlab/" in f and f.endswith(".py"):
                return "loadlab", "loadlab's instrumentation"
            continue
        rest = f.rpartition(f"/{pkg}/")[2]
        for package, file, name, layer in LAYERS:
            if package == pkg and fnmatch.fnmatch(rest, file) and fnmatch.fnmatch(frame.name, name):
                return package, layer
    return "python", "event loop and runtime"


def layer_shares(stacks: Iterable[Stack], loop_samples: int) -> list[dict[str, object]]:
    """run.json's ``analysis.loop.framework_layers``: the loop samples with no application frame,
    per framework layer, largest first."""
    counts: Counter[tuple[str, str]] = Counter()
    for s in stacks:
        counts[framework_layer(s.frames)] += s.count
    return [
        {"package": pkg, "layer": layer, "samples": n, "share": round(n / loop_samples, 4) if loop_samples else 0.0}
        for (pkg, layer), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
