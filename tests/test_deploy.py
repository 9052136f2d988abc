"""``deploy/``: the Compose file and the Kubernetes manifests agree with the CLI and with Locust.

Each Locust command line in them is parsed by Locust's own argument parser (in a subprocess:
importing Locust here would patch pytest with gevent), with Compose's ``${VAR:-default}``
replaced by its default.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from loadlab.config import ProfileConfig
from tests.helpers import REPO

DEPLOY = REPO / "deploy"
LOCUST_VERSION = re.search(r"^locust==(\S+)$", (REPO / "constraints.txt").read_text(), re.M).group(1)  # type: ignore[union-attr]
DEFAULT = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _parse_with_locust(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    code = (
        "import json, sys\nfrom locust.argument_parser import get_parser\n"
        "opts = get_parser().parse_args(sys.argv[1:])\n"
        "print(json.dumps({k: v for k, v in vars(opts).items() if isinstance(v, (str, int, bool, type(None)))}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, f"Locust refuses {argv}: {done.stderr[-500:]}"
    parsed: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return parsed


def test_compose_workers_reach_loadlabs_master() -> None:
    (compose,) = _docs(DEPLOY / "compose.yaml")
    services = compose["services"]
    for service in services.values():
        assert service["image"] == f"locustio/locust:{LOCUST_VERSION}"
    worker = _parse_with_locust(DEFAULT.sub(r"\2", services["worker"]["command"]).split())
    assert worker["worker"] is True
    assert worker["master_port"] == ProfileConfig().master_port  # loadlab's --master-port default
    assert worker["locustfile"] == "/mnt/locust/locustfile.py"
    master = _parse_with_locust(DEFAULT.sub(r"\2", services["master"]["command"]).split())
    assert master["master"] is True and master["master_bind_port"] == worker["master_port"]
    assert services["master"]["ports"] == ["127.0.0.1:8089:8089"]  # the web UI on loopback only
    assert "host.docker.internal:host-gateway" in services["worker"]["extra_hosts"]


def test_kubernetes_manifests_fit_together() -> None:
    (configmap,) = _docs(DEPLOY / "k8s" / "configmap.yaml")
    master, service = _docs(DEPLOY / "k8s" / "master.yaml")
    (worker,) = _docs(DEPLOY / "k8s" / "worker.yaml")
    compile(configmap["data"]["locustfile.py"], "locustfile.py", "exec")  # a locustfile that parses

    def container(deployment: dict[str, Any]) -> dict[str, Any]:
        spec = deployment["spec"]["template"]["spec"]
        assert spec["volumes"][0]["configMap"]["name"] == configmap["metadata"]["name"]
        (c,) = spec["containers"]
        assert c["image"] == f"locustio/locust:{LOCUST_VERSION}"
        assert c["volumeMounts"][0]["mountPath"] + "/locustfile.py" == c["args"][c["args"].index("-f") + 1]
        return c

    m, w = container(master), container(worker)
    master_opts = _parse_with_locust(m["args"])
    env = {e["name"]: e["value"] for e in w["env"]}
    worker_opts = _parse_with_locust(w["args"], env={"PATH": "/usr/bin:/bin", **env})
    assert master_opts["master"] and worker_opts["worker"]
    assert worker_opts["master_host"] == service["metadata"]["name"]
    assert worker_opts["master_port"] == master_opts["master_bind_port"] == ProfileConfig().master_port
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports["master"] == master_opts["master_bind_port"] and ports["web"] == master_opts["web_port"]
    assert service["spec"]["selector"] == master["spec"]["selector"]["matchLabels"]
