"""``make smoke`` end to end: the healthy suite passes, the blocking variant fails and says why."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.live


def smoke(tmp_path: Path, variant: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    argv = [
        sys.executable,
        "-m",
        "loadlab.smoke",
        "--variant",
        variant,
        "--out",
        str(tmp_path),
        "--run",
        "run",
        "--junit-xml",
        str(tmp_path / "junit.xml"),
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=110)
    return proc, tmp_path / "run"


def test_healthy_suite_passes_and_keeps_locust_outputs(tmp_path: Path) -> None:
    proc, run = smoke(tmp_path, "healthy")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((run / "smoke.json").read_text())
    assert summary["passed"] and summary["seconds"] < 60
    for step in summary["steps"]:
        folder = run / step["folder"]
        for name in (
            "locust_stats.csv",
            "locust_stats_history.csv",
            "locust.html",
            "locust.json",
            "locust.log",
        ):
            assert (folder / name).is_file(), f"{step['name']}: {name} missing"
        verdict = json.loads((folder / "thresholds.json").read_text())
        assert verdict["passed"] and verdict["valid"]
        assert "event-loop lag p99" in {c["name"] for c in verdict["checks"]}


def test_same_gates_fail_on_the_blocking_variant_naming_the_budget(tmp_path: Path) -> None:
    proc, run = smoke(tmp_path, "blocking")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "broken budget: event-loop lag p99" in proc.stdout
    assert "broken budget: p95 /health (canary)" in proc.stdout
    verdict = json.loads((run / "io-blocking" / "thresholds.json").read_text())
    assert verdict["valid"] and not verdict["passed"]
    # The culprit, named from the app's own stall records and loop samples, with its line.
    culprit = re.search(r"(blocking_sleep|sync_helper_sleep) in target_app/routes/io\.py:(\d+)", proc.stdout)
    assert culprit is not None, proc.stdout
    function, line = culprit.groups()
    source = (REPO / "target_app" / "routes" / "io.py").read_text().splitlines()[int(line) - 1]
    assert "sleep" in source, f"io.py:{line} is {source!r}, not the blocking call"
    assert f"`{function}` in `target_app/routes/io.py:{line}`" in (run / "smoke.md").read_text()
    root = ET.parse(tmp_path / "junit.xml").getroot()
    failures = [f.get("message", "") for f in root.iter("failure")]
    assert any(m.startswith("event-loop lag p99: measured") and "culprit" in m and ".py:" in m for m in failures)
