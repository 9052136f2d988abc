"""``make locust`` (``python -m loadlab.locust_ui``) when things go wrong: a port already taken,
a child failing at start; and the normal path's logs and Ctrl-C.

Each case runs the real module as a subprocess with bounded timeouts, from a temp folder, with a
temp folder of its own as ``TMPDIR`` (that subprocess's ``tempfile.gettempdir()``): the temp logs
the harness used to leave (``locust-*.log``, ``upstream stub-*.log``, ``target app-*.log``) would
land there, and no other test running at the same time can put one there. A marker in the
subprocess's environment, inherited by every process it starts, finds anything left running.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from loadlab.locust_ui import cause_from_log
from loadlab.processes import LOOPBACK, free_port

MARK_VAR = "LOADLAB_TEST_LOCUST_UI_MARK"
TEMP_LOG = re.compile(r"^(locust|upstream stub|target app)-.*\.log$")
LOGS = {"locust.log", "server.log", "upstream.log"}


@dataclass
class Ui:
    """One ``python -m loadlab.locust_ui`` in its own folder, with its own TMPDIR and marker."""

    root: Path
    mark: str

    @property
    def tmpdir(self) -> Path:
        return self.root / "tmp"

    @property
    def profiles(self) -> Path:
        return self.root / "profiles"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in {"LOCUST_WEB_PORT", "PORT", "LOADLAB_PROFILES_DIR"}}
        env.update(TMPDIR=str(self.tmpdir), **{MARK_VAR: self.mark}, **extra)
        return env

    def popen(self, *args: str, **env: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "loadlab.locust_ui", "--profiles-dir", str(self.profiles), *args]
        return subprocess.Popen(
            argv, cwd=self.root, env=self.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def run(self, *args: str, timeout: float, **env: str) -> tuple[subprocess.CompletedProcess[str], set[int]]:
        """Run to the end; also return the PIDs of every descendant seen while it ran."""
        proc = self.popen(*args, **env)
        seen: set[int] = set()
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    seen.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
                except psutil.Error:
                    pass
                time.sleep(0.01)
            out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 1.0))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # its children go with it (stop ladder)
                proc.communicate(timeout=30)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), seen

    def temp_logs(self) -> list[str]:
        return sorted(p.name for p in self.tmpdir.iterdir() if TEMP_LOG.match(p.name))

    def marked(self) -> list[int]:
        """PIDs of the processes still running with this UI's marker in their environment."""
        out = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARK_VAR) == self.mark and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc.pid)
            except psutil.Error:
                continue
        return out

    def assert_nothing_left_running(self, timeout: float = 15.0) -> None:
        # The harness's guardian process sweeps its tree within a few seconds of the harness exit.
        deadline = time.monotonic() + timeout
        while self.marked() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert self.marked() == []

    def run_dir(self) -> Path:
        (run_dir,) = [p for p in self.profiles.iterdir() if p.is_dir()]
        assert run_dir.name.endswith("-ui")
        return run_dir


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[Ui]:
    ui = Ui(tmp_path, uuid.uuid4().hex)
    ui.tmpdir.mkdir()
    yield ui
    for pid in ui.marked():  # a failed test must not leave its UI running either
        try:
            psutil.Process(pid).kill()
        except psutil.Error:
            pass


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something listens on, as another Locust UI or `make serve` would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize("flag", ["--web-port", "--app-port"])
def test_a_port_taken_is_one_line_exit_2_and_nothing_started(ui: Ui, taken_port: int, flag: str) -> None:
    other = "--app-port" if flag == "--web-port" else "--web-port"
    result, children = ui.run(flag, str(taken_port), other, str(free_port()), timeout=30)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert f"port {taken_port} on {LOOPBACK} is in use" in lines[0]
    assert f"pick another with {flag}" in lines[0]
    assert result.stdout == ""
    assert children == set()  # nothing was started: no stub, no app, no Locust, no guardian
    assert not ui.profiles.exists()  # nor any folder created
    assert ui.temp_logs() == []
    ui.assert_nothing_left_running()


@pytest.mark.live
def test_locust_failing_at_start_is_named_with_its_own_cause(ui: Ui) -> None:
    result, _ = ui.run("--web-port", str(free_port()), "--app-port", "0", "--", "--no-such-flag", timeout=90)

    assert result.returncode == 1, result.stderr
    run_dir = ui.run_dir()
    assert (
        result.stdout.splitlines()[0]
        == f"loadlab: logs in {run_dir}/ (locust.log, server.log, upstream.log); each test gets test-<n>/"
    )
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: Locust exited (code 2) before it was ready: ")
    assert "unrecognized arguments: --no-such-flag" in line
    assert line.endswith(f"[log: {run_dir / 'locust.log'}]")
    assert "requests made" not in line and "overloaded" not in line
    assert {p.name for p in run_dir.iterdir()} >= LOGS
    assert ui.temp_logs() == []
    ui.assert_nothing_left_running()


@pytest.mark.live
def test_the_app_failing_at_start_is_named_with_its_own_cause(ui: Ui) -> None:
    result, _ = ui.run(
        "--web-port", str(free_port()), "--app-port", "0", timeout=90, LOADLAB_THREAD_TOKENS="not-a-number"
    )

    assert result.returncode == 1, result.stderr
    run_dir = ui.run_dir()
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: target app exited (code 1) before it was ready: ")
    assert "SettingsError: LOADLAB_THREAD_TOKENS must be an integer" in line
    assert line.endswith(f"[log: {run_dir / 'server.log'}]")
    assert ui.temp_logs() == []
    ui.assert_nothing_left_running()


@pytest.mark.live
def test_normal_run_keeps_its_logs_in_its_run_folder_and_stops_on_ctrl_c(ui: Ui) -> None:
    web_port = free_port()
    proc = ui.popen("--web-port", str(web_port), "--app-port", "0")
    try:
        assert proc.stdout is not None
        out = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # readline blocks, but the UI either prints or exits
            line = proc.stdout.readline()
            out.append(line)
            if not line or "Ctrl-C stops" in line:
                break
        assert any(f"Locust web UI at http://{LOOPBACK}:{web_port}" in line for line in out), "".join(out)
        assert httpx.get(f"http://{LOOPBACK}:{web_port}/", timeout=10).status_code == 200
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)

    assert proc.returncode == 0, err
    run_dir = ui.run_dir()
    assert out[0] == f"loadlab: logs in {run_dir}/ (locust.log, server.log, upstream.log); each test gets test-<n>/\n"
    assert f"loadlab: stopped; logs in {run_dir}/" in rest
    assert {p.name for p in run_dir.iterdir()} >= LOGS
    assert "Starting web interface" in (run_dir / "locust.log").read_text()
    assert ui.temp_logs() == []
    ui.assert_nothing_left_running()


def test_the_cause_is_the_exception_not_locusts_stats_tables() -> None:
    locust_tail = """\
  File "/venv/lib/python3.11/site-packages/gevent/_socketcommon.py", line 538, in bind
    return self._sock.bind(address)
OSError: [Errno 98] Address already in use: ('127.0.0.1', 8089)
[2026-11-28 15:56:51,966] vm/CRITICAL/locust.web: Unhandled exception in greenlet: <Greenlet at 0x7f>
Type     Name          # reqs      # fails |    Avg     Min     Max    Med |   req/s  failures/s
--------|-------------|-------|-------------|-------|-------|-------|-------|--------|-----------
         Aggregated        0     0(0.00%) |      0       0       0      0 |    0.00        0.00

budget                   limit    measured  result
requests made                1           0  FAIL
loadlab thresholds: INVALID run (load generator overloaded) — broken budget: requests made: 0 > 1
"""
    assert cause_from_log(locust_tail) == "OSError: [Errno 98] Address already in use: ('127.0.0.1', 8089)"
    uvicorn_tail = """\
INFO:     Application startup complete.
ERROR:    [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use
INFO:     Waiting for application shutdown.
INFO:     Application shutdown complete.
"""
    assert cause_from_log(uvicorn_tail) == (
        "ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use"
    )
    assert cause_from_log(
        "usage: locust ...\n__main__.py: error: unrecognized arguments: -x\nDid you mean '-t'?\n"
    ) == ("__main__.py: error: unrecognized arguments: -x")
    assert cause_from_log("") == "no output"
