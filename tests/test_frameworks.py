"""Each framework's example app (examples/): its routes read through the framework's own router,
and, under load, the blocker named with its route and kind and the sync-code threads with the
role of their pool. A framework whose extra is not installed is skipped."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loadlab.analysis.frameworks import (
    ANYIO_POOL,
    ASGIREF_PER_REQUEST,
    ASGIREF_SHARED,
    LOOP_EXECUTOR_POOL,
    detect_framework,
    framework_layer,
    thread_pools,
)
from loadlab.analysis.stacks import Frame, Role, asgiref_shared_threads, parse_raw, read_raw
from loadlab.analysis.theory import ceiling
from loadlab.analysis.verdicts import advice_for
from loadlab.instrument import _endpoint_codes, app_map, route_of, route_resolver
from loadlab.results import endpoint_rows
from tests.helpers import REPO, loadlab, run_json

EXAMPLES = REPO / "examples"
ROUTES = ["/blocking", "/fixed", "/sync"]


def example(framework: str) -> ModuleType:
    """The example app's module, imported from its file under a name of its own."""
    pytest.importorskip(framework)
    spec = importlib.util.spec_from_file_location(f"example_{framework}", EXAMPLES / framework / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Litestar reads the handlers' annotations from their module
    spec.loader.exec_module(module)
    return module


def scope(path: str, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": path, **extra}


@pytest.mark.parametrize("framework", ["starlette", "litestar", "quart", "falcon"])
def test_the_route_map_is_read_from_the_framework_router(framework: str) -> None:
    app = example(framework).app
    assert [r["path"] for r in app_map(app)["routes"]] == ROUTES
    assert framework in app_map(app)["packages"]  # the framework, even if no sample catches its code


def test_a_framework_no_sample_caught_is_known_from_the_app() -> None:
    # Falcon hands /sync's work to the loop's executor and leaves no frame there; its own handling
    # on the loop took ~2% of the time, and a run's 10 looks at it can all miss (seen in a
    # fresh-clone run of the suite, issue 18).
    executor = (
        'process 1:"python app";thread (2): uvloop_0;_worker (/usr/lib/python3.11/concurrent/futures/thread.py:83);'
        "sync_report (/app/app.py:30) 7"
    )
    loop = 'process 1:"python app";thread (1): MainThread;Runner.run (/usr/lib/python3.11/asyncio/runners.py:118) 5'
    idle = parse_raw([loop, executor])
    assert detect_framework(idle) is None
    assert detect_framework(idle, ("loadlab", "falcon")) == "falcon"
    assert set(thread_pools(idle, detect_framework(idle, ("falcon",))).values()) == {LOOP_EXECUTOR_POOL}


def test_a_request_gets_its_route_template_from_quart_and_falcon_routers() -> None:
    quart, falcon = example("quart"), example("falcon")

    async def item(item: int) -> str:
        return str(item)

    quart.app.add_url_rule("/items/<int:item>", view_func=item)
    falcon.app.add_route("/items/{item:int}", falcon.Fixed())
    for module, template in [(quart, "/items/<int:item>"), (falcon, "/items/{item:int}")]:
        resolve = route_resolver(module.app, _endpoint_codes(module.app))
        assert route_of(scope("/items/7"), resolve) == template
        assert route_of(scope("/blocking"), resolve) == "/blocking"
        assert route_of(scope("/nowhere"), resolve) == "/nowhere"  # no route: the raw path


def test_starlette_and_litestar_leave_the_route_in_the_scope() -> None:
    module = example("starlette")
    resolve = route_resolver(module.app, _endpoint_codes(module.app))
    assert route_of(scope("/sync", endpoint=module.sync_report), resolve) == "/sync"
    assert route_of(scope("/items/7", path_template="/items/{item:int}")) == "/items/{item:int}"  # Litestar's


def test_django_routes_come_from_its_url_resolver() -> None:
    pytest.importorskip("django")
    code = (
        "import json, mysite; from loadlab.instrument import app_map, route_of, route_resolver, _endpoint_codes;"
        "app = mysite.application; r = route_resolver(app, _endpoint_codes(app));"
        "print(json.dumps([[x['path'] for x in app_map(app)['routes']],"
        " route_of({'path': '/sync'}, r), route_of({'path': '/nowhere'}, r)]))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=EXAMPLES / "django", capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [ROUTES, "/sync", "/nowhere"]


def test_a_django_class_based_view_is_mapped_to_its_route(tmp_path: Path) -> None:
    # resolve() gives as_view()'s function, which is Django's: the class's get/post are the app's.
    pytest.importorskip("django")
    code = (
        "import json; from django.conf import settings; settings.configure(ROOT_URLCONF='__main__', MIDDLEWARE=[]);"
        "from django.core.asgi import get_asgi_application; from django.http import JsonResponse;"
        "from django.urls import path; from django.views import View\n"
        "class Report(View):\n    def get(self, request): return JsonResponse({})\n"
        "    def post(self, request): return JsonResponse({})\n"
        "urlpatterns = [path('reports/<int:pk>', Report.as_view())]\n"
        "from loadlab.instrument import app_map, route_of, route_resolver, _endpoint_codes\n"
        "app = get_asgi_application(); r = route_resolver(app, _endpoint_codes(app))\n"
        "print(json.dumps([[(x['function'], x['path']) for x in app_map(app)['routes']],"
        " route_of({'path': '/reports/7'}, r)]))"
    )
    (tmp_path / "cbv.py").write_text(code)  # a file of the app's: "<string>" is nobody's code
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "cbv.py"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == [
        [["Report.get", "/reports/<int:pk>"], ["Report.post", "/reports/<int:pk>"]],
        "/reports/<int:pk>",
    ]


SITE = "/venv/lib/python3.11/site-packages"
LOOP = f"Runner.run (/usr/lib/python3.11/asyncio/runners.py:118);handle ({SITE}/django/core/handlers/asgi.py:1)"
ASGIREF = (
    "_worker (/usr/lib/python3.11/concurrent/futures/thread.py:83);"
    f"SyncToAsync.thread_handler ({SITE}/asgiref/sync.py:635);report (/app/views.py:3)"
)


def profile_of(*threads: str) -> Any:
    lines = [f'process 1:"python app";thread (1): MainThread;{LOOP} 5']
    lines += [f'process 1:"python app";thread ({i}): {name};{ASGIREF} 7' for i, name in enumerate(threads, 2)]
    return parse_raw(lines)


def test_asgiref_threads_are_a_pool_of_their_own_and_django_is_read_from_the_stacks() -> None:
    one = profile_of("ThreadPoolExecutor-0_0")
    assert detect_framework(one) == "django"
    assert set(thread_pools(one).values()) == {ASGIREF_SHARED}  # every call on one thread
    assert set(thread_pools(profile_of("ThreadPoolExecutor-1_0", "ThreadPoolExecutor-2_0")).values()) == {
        ASGIREF_PER_REQUEST  # Django's handler: a thread per request
    }
    # thread_sensitive=False: the loop's default executor runs asgiref's calls
    assert set(thread_pools(profile_of("asyncio_0", "asyncio_1")).values()) == {LOOP_EXECUTOR_POOL}


@pytest.mark.parametrize(
    ("path", "function", "layer"),
    [
        ("django/urls/resolvers.py", "URLResolver.resolve", ("django", "URL resolution")),
        ("django/utils/deprecation.py", "MiddlewareMixin.__acall__", ("django", "middleware")),
        ("django/http/response.py", "JsonResponse.__init__", ("django", "serialisation / response")),
        ("starlette/middleware/base.py", "BaseHTTPMiddleware.__call__", ("starlette", "middleware")),
        ("starlette/routing.py", "Router.app", ("starlette", "routing")),
        ("litestar/_asgi/asgi_router.py", "ASGIRouter.__call__", ("litestar", "routing")),
        ("werkzeug/routing/map.py", "MapAdapter.match", ("werkzeug", "routing")),
        ("falcon/routing/compiled.py", "CompiledRouter.find", ("falcon", "routing")),
        ("uvicorn/protocols/http/h11_impl.py", "H11Protocol.data_received", ("uvicorn", "server (uvicorn)")),
    ],
)
def test_framework_time_on_the_loop_is_named_by_layer(path: str, function: str, layer: tuple[str, str]) -> None:
    outer = Frame("ASGIHandler.__call__", f"{SITE}/django/core/handlers/asgi.py", 1)
    inner = Frame("dumps", "/usr/lib/python3.11/json/__init__.py", 231)  # the stdlib: the caller decides
    assert framework_layer((outer, Frame(function, f"{SITE}/{path}", 10), inner)) == layer


@pytest.mark.parametrize(
    ("framework", "words"),
    [
        (None, "make it `def` (FastAPI runs it in the threadpool)"),
        ("fastapi", "make it `def` (FastAPI runs it in the threadpool)"),
        ("django", "`await sync_to_async(fn, thread_sensitive=False)(...)`"),
        ("litestar", "`sync_to_thread=True`"),
        ("quart", "`await run_sync(fn)()`"),
        ("falcon", "`await loop.run_in_executor(None, fn, ...)`"),
        ("starlette", "`await run_in_threadpool(...)` (`starlette.concurrency`)"),
    ],
)
def test_the_advice_is_in_the_frameworks_words(framework: str | None, words: str) -> None:
    assert words in advice_for({"kind": "wait", "place": "handler"}, framework=framework)


def test_each_pools_ceiling() -> None:
    # 20 ms of service, 8 users, one server worker process
    cpus = os.cpu_count() or 1
    assert ceiling("asgiref one thread", 0.02, 8, 40, 1, 1) == pytest.approx(50)
    assert ceiling("asgiref per request", 0.02, 8, 40, 1, 1) == pytest.approx(400)
    assert ceiling("loop executor", 0.02, 64, 40, 1, 1) == pytest.approx(min(32, cpus + 4) / 0.02)


# Each example under load (-u 5), twice: all three routes (-t 4), then /sync alone (-t 3: a
# single-pattern run for the theory). One run of each per framework, shared by every test below.
LIVE = [
    # framework, --app, the blocker's name, the role of the threads that ran the def view
    ("django", "mysite:application", "blocking", Role.ASGIREF_EXECUTOR),
    ("starlette", "app:app", "blocking", Role.ANYIO_WORKER),
    ("litestar", "app:app", "blocking", Role.LOOP_EXECUTOR),  # sync_to_thread: loop.run_in_executor
    ("quart", "app:app", "blocking", Role.LOOP_EXECUTOR),  # run_sync: the loop's default executor
    ("falcon", "app:app", "Blocking.on_get", Role.LOOP_EXECUTOR),  # falcon.util.sync_to_async
]
# framework -> the pool its /sync route ran in, the theory's model, words of its verdict
MODELS = {
    "django": (ASGIREF_PER_REQUEST, "asgiref per request", "sync_to_async(fn, thread_sensitive=False)"),
    "starlette": (ANYIO_POOL, "threadpool", "run_in_threadpool(...)` (`starlette.concurrency`)"),
    "litestar": (LOOP_EXECUTOR_POOL, "loop executor", "sync_to_thread=True"),
    "quart": (LOOP_EXECUTOR_POOL, "loop executor", "run_sync(fn)()"),
    "falcon": (LOOP_EXECUTOR_POOL, "loop executor", "falcon.util.sync_to_async(fn"),
}
FIT = 0.15  # tests/test_mix_model.py's: the model of the mix within ±15% of Locust's throughput


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``live(framework, tags)``: the example's run folder, run once (``tags`` "" for every route);
    ``again=True`` runs it once more."""
    done: dict[tuple[str, str], Path] = {}

    def run(framework: str, tags: str, again: bool = False) -> Path:
        if (framework, tags) not in done or again:
            app = next(x[1] for x in LIVE if x[0] == framework)
            out = tmp_path_factory.mktemp(f"{framework}-{tags or 'all'}") / "run"
            # Every 10 ms block of /blocking a stall for the watchdog to name (25 ms while profiling:
            # three back to back, by chance; once py-spy's pauses lengthened them, issue 18).
            stalls = {} if tags else {"LOADLAB_STALL_MS": "8"}
            result = loadlab(
                "profile", "--app", app, "--locustfile", "locustfile.py", *(["--tags", tags] if tags else []),
                "-u", "5", "-t", "3" if tags else "4", "--out", str(out), cwd=EXAMPLES / framework, timeout=90,
                env=stalls,
            )  # fmt: skip
            assert result.returncode == 0, result.stderr[-2000:]
            done[framework, tags] = out
        return done[framework, tags]

    return run


@pytest.mark.slow
@pytest.mark.parametrize(("framework", "app", "blocker", "role"), LIVE, ids=[x[0] for x in LIVE])
def test_each_framework_under_load(
    live: Callable[..., Path], framework: str, app: str, blocker: str, role: Role
) -> None:
    pytest.importorskip(framework)
    out = live(framework, "")
    run = run_json(out)
    top = run["analysis"]["loop"]["blockers"]
    named = {b["function"]: b for b in top}
    assert (named[blocker]["kind"], named[blocker]["routes"]) == ("wait", ["/blocking"]), top
    assert max(top, key=lambda b: b["share"] if b["function"] != "(library or runtime code)" else 0) is named[blocker]
    # The stall watchdog names the route of the request that held the loop.
    assert any(s["function"] == blocker and s["route"] == "/blocking" for s in run["stalls"]), run["stalls"][:5]
    profile = read_raw(out / "profile.raw.txt")
    ran_view = {t.role for t in profile.threads.values() if any(
        f.name == "sync_report" for s in profile.by_thread(t.key) for f in s.frames
    )}  # fmt: skip
    assert ran_view == {role}
    assert role.value in {t["role"] for t in run["analysis"]["threads"]}
    if framework == "django":  # a thread per request: the def views are not in line for one thread
        assert len({t.key for t in profile.threads.values() if t.role is role}) > 5
        assert asgiref_shared_threads(profile) == {}
    # The framework, read from the stacks; the verdict on the blocker in its words.
    pool, _, words = MODELS[framework]
    assert run["analysis"]["framework"] == framework
    verdict = next(v["text"] for v in run["report"]["verdicts"] if v["text"].startswith(f"`{blocker}`"))
    assert words in verdict, verdict
    # The threadpool view: the pool that ran the def view, its threads busy with it.
    pools = {p["pool"]: p for p in run["analysis"]["threadpool"]["pools"]}
    assert pools[pool]["threads_seen"] >= 1 and pools[pool]["average_busy_workers"] > 0.05, pools
    assert any(
        f["function"] == "sync_report" and f["pool"] == pool for f in run["analysis"]["threadpool"]["by_function"]
    )
    # "(library or runtime code)" is told by layer: the layers add up to it, each one named.
    lumped = sum(b["share"] for b in top if b["function"] == "(library or runtime code)")
    layers = run["analysis"]["loop"]["framework_layers"]
    assert sum(x["share"] for x in layers) == pytest.approx(lumped, abs=0.002), layers
    assert all(x["layer"] and x["package"] for x in layers)
    assert "The event loop outside your code, per layer" in (out / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("framework", [x[0] for x in LIVE])
def test_each_frameworks_sync_route_follows_its_pools_model(live: Callable[..., Path], framework: str) -> None:
    # /sync alone: a 20 ms sleep in the framework's pool, 5 users thinking 20 ms. No pool limits it,
    # so the per-endpoint theory's ceiling is users / S, which leaves out that think time: its
    # ratio is about S / (S + Z) = 0.6-0.66 here (0.596 seen once), not the ~1 of a saturated route,
    # hence 0.5 at the low end, not the FastAPI tests' 0.6. The model of the mix counts the think
    # time: within their ±15%. The pool's threads are sampled by py-spy at 20 Hz without pausing
    # (issue 18): the 20 ms call measured 17.6-27.4 ms over 5 runs of litestar's, so a miss is
    # measured once more before it is believed, as tests/test_mix_model.py does.
    pytest.importorskip(framework)
    run = run_json(live(framework, "sync"))
    if abs(run["report"]["model"]["ratio"] - 1) > FIT:
        run = run_json(live(framework, "sync", again=True))
    pool, model, _ = MODELS[framework]
    (row,) = run["report"]["theory"]
    assert row["model"] == model, row
    assert 0.5 <= row["ratio"] <= 1.3, row
    mix = run["report"]["model"]
    assert abs(mix["ratio"] - 1) <= FIT, mix
    station = ASGIREF_PER_REQUEST if pool == ASGIREF_PER_REQUEST else "threadpool" if pool == ANYIO_POOL else pool
    assert mix["routes"][0]["demands_ms"].get(station, 0) > 10, mix["routes"]  # the 20 ms sleep, at its station
    if pool == LOOP_EXECUTOR_POOL:
        sizes = {s["name"]: s["servers"] for s in run["demands"]["stations"]}
        assert sizes[pool] == min(32, (os.cpu_count() or 1) + 4)


@pytest.mark.slow
def test_sync_to_async_outside_django_puts_every_call_on_one_thread(tmp_path: Path) -> None:
    # examples/django/shared_thread.py: Starlette calling sync_to_async (thread-sensitive) for a
    # 20 ms call. All calls run on asgiref's one shared thread: 50 req/s at most, whatever the load.
    pytest.importorskip("asgiref")
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", "shared_thread:app", "--locustfile", "locustfile.py", "--tags", "sync",
        "-u", "5", "-t", "8", "--out", str(out), cwd=EXAMPLES / "django", timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    profile = read_raw(out / "profile.raw.txt")
    (shared,) = asgiref_shared_threads(profile).values()
    assert shared.role is Role.ASGIREF_EXECUTOR
    (row,) = endpoint_rows(run_json(out))
    assert row["rps"] < 1 / 0.02 * 1.15, row  # one server of 20 ms; its four users would allow 4x that
    assert row["p50_ms"] > 2.5 * 20, row  # each call waits for the others' turns
    # A one-server station, in the theory and in the model of the mix; the verdict says why.
    run = run_json(out)
    (theory,) = run["report"]["theory"]
    assert theory["model"] == "asgiref one thread" and 0.6 <= theory["ratio"] <= 1.3, theory
    model = run["report"]["model"]
    # ±25%, not FIT: the one thread's demand comes from a non-pausing py-spy at 20 Hz (issue 18).
    # Its counts are scaled by the rate py-spy reached, not the 20 Hz asked for (py-spy's intervals
    # are random: 100 ± 10 samples in 5 s): 19.0-20.9 ms for the 20 ms call in 5 runs here, the
    # model at 0.95-1.04. Scaled by 20 Hz it read 15.5-20.5 ms here, and ~25 ms by CI's model
    # (39.7 req/s predicted, 49.8 measured: a 25% miss).
    assert model["bottleneck"] == ASGIREF_SHARED and abs(model["ratio"] - 1) <= 0.25, model
    # The one thread is busy all along: its utilisation, throughput x demand, is one. Within 20%:
    # at 20 Hz the samples that land in its busy seconds are a binomial draw, ±5% (one sd) in 8 s.
    (station,) = [s for s in run["demands"]["stations"] if s["name"] == ASGIREF_SHARED]
    assert 0.8 <= row["rps"] * station["demands_ms"]["/sync"] / 1000 <= 1.2, (row["rps"], station)
    shared_verdict = next(v for v in run["report"]["verdicts"] if v["text"].startswith("asgiref's one shared thread"))
    assert shared_verdict["level"] == "problem" and "thread_sensitive=False" in shared_verdict["text"]
