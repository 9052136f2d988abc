"""Each framework's example app (examples/): its routes read through the framework's own router,
and, under load, the blocker named with its route and kind and the sync-code threads with the
role of their pool. A framework whose extra is not installed is skipped."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from loadlab.analysis.stacks import Role, asgiref_shared_threads, read_raw
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


# Each example under load (-u 5 -t 4, all three routes): the async view that calls time.sleep is
# the blocker, waiting, on /blocking; the def view ran in the threads of the framework's pool.
LIVE = [
    # framework, --app, the blocker's name, the role of the threads that ran the def view
    ("django", "mysite:application", "blocking", Role.ASGIREF_EXECUTOR),
    ("starlette", "app:app", "blocking", Role.ANYIO_WORKER),
    ("litestar", "app:app", "blocking", Role.LOOP_EXECUTOR),  # sync_to_thread: loop.run_in_executor
    ("quart", "app:app", "blocking", Role.LOOP_EXECUTOR),  # run_sync: the loop's default executor
    ("falcon", "app:app", "Blocking.on_get", Role.LOOP_EXECUTOR),  # falcon.util.sync_to_async
]


@pytest.mark.slow
@pytest.mark.parametrize(("framework", "app", "blocker", "role"), LIVE, ids=[x[0] for x in LIVE])
def test_each_framework_under_load(tmp_path: Path, framework: str, app: str, blocker: str, role: Role) -> None:
    pytest.importorskip(framework)
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", app, "--locustfile", "locustfile.py", "-u", "5", "-t", "4", "--out", str(out),
        cwd=EXAMPLES / framework, timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
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


@pytest.mark.slow
def test_sync_to_async_outside_django_puts_every_call_on_one_thread(tmp_path: Path) -> None:
    # examples/django/shared_thread.py: Starlette calling sync_to_async (thread-sensitive) for a
    # 20 ms call. All calls run on asgiref's one shared thread: 50 req/s at most, whatever the load.
    pytest.importorskip("asgiref")
    out = tmp_path / "run"
    result = loadlab(
        "profile", "--app", "shared_thread:app", "--locustfile", "locustfile.py", "--tags", "sync",
        "-u", "5", "-t", "4", "--out", str(out), cwd=EXAMPLES / "django", timeout=90,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    profile = read_raw(out / "profile.raw.txt")
    (shared,) = asgiref_shared_threads(profile).values()
    assert shared.role is Role.ASGIREF_EXECUTOR
    (row,) = endpoint_rows(run_json(out))
    assert row["rps"] < 1 / 0.02 * 1.15, row  # one server of 20 ms; its four users would allow 4x that
    assert row["p50_ms"] > 2.5 * 20, row  # each call waits for the others' turns
