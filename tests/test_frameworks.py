"""Each framework's example app (examples/): its routes read through the framework's own router,
and, under load, the blocker named with its route and kind and the sync-code threads with the
role of their pool. A framework whose extra is not installed is skipped."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from loadlab.instrument import _endpoint_codes, app_map, route_of, route_resolver
from tests.helpers import REPO

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
