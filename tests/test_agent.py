"""``loadlab agent`` and ``loadlab profile --agent``: the server profiled on its own host.

The agent runs in a separate process on loopback (no network namespace: the test does not create
one), as it would next to the app; the harness reaches it only over HTTP with the token.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadlab.processes import LOOPBACK, free_port
from tests.helpers import REPO, loadlab, run_json

pytestmark = pytest.mark.live

TOKEN = "test-token-0123456789abcdef"


@contextlib.contextmanager
def agent(tmp: Path, cwd: Path = REPO) -> Iterator[tuple[str, Path, Path]]:
    """An agent on a free loopback port: its URL, its token file and its recordings folder."""
    token, runs, port = tmp / "token", tmp / "agent-runs", free_port()
    token.write_text(TOKEN + "\n")
    argv = [sys.executable, "-m", "loadlab", "agent", "--token-file", str(token), "--port", str(port)]
    proc = subprocess.Popen([*argv, "--runs-dir", str(runs)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://{LOOPBACK}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/recordings/x", timeout=1).status_code == 401:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "the agent never answered"
            time.sleep(0.1)
        yield url, token, runs
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_run_through_the_agent_names_the_blocker_like_a_local_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with agent(tmp_path) as (url, token, runs):
        result = loadlab(
            "profile", "-T", "blocking-sleep", "-u", "11", "-t", "6", "--agent", url,
            "--agent-token-file", str(token), "--out", str(out), timeout=120,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        run = run_json(out)
        (recording,) = list(runs.iterdir())
        # The agent stopped its server and the demo's stub; only loadlab's own files are handed back.
        bad = httpx.get(f"{url}/recordings/{recording.name}/files/..%2F..%2Fetc%2Fhostname", headers=_auth())
        assert bad.status_code == 404
        for name in ("../token", "/etc/hostname", "upstream.log", ".server-exit-code"):
            answer = httpx.get(f"{url}/recordings/{recording.name}/files/{name}", headers=_auth())
            assert answer.status_code == 404, name
    assert run["status"] == "complete", run.get("reason")
    assert run["agent"]["recording"] == recording.name
    top = next(b for b in run["analysis"]["loop"]["blockers"] if b.get("file"))
    assert (top["function"], top["kind"], top["route"]) == ("blocking_sleep", "wait", "/io/blocking-sleep")
    assert top["share"] > 0.5
    assert any("lag_ms" in p for p in run["timeseries"]), "the agent's loop points reach the time series"
    assert (out / "profile.raw.txt").stat().st_size > 0 and (out / "report.html").is_file()
    # Recorded as a local run is: the loop by the app, py-spy on the rest (the cut to the load's
    # start is test_remote_workers' to show, where a wait of 4 s tells it apart).
    assert run["profiler"]["mode"] == "split" and run["profiler"]["loop"] == "sampler", run["profiler"]


def test_the_agent_refuses_a_wrong_token_and_a_second_recording(tmp_path: Path) -> None:
    with agent(tmp_path) as (url, _, runs):
        settings = {"app": "target_app.main:app", "profile": False, "loop_by_app": False}  # --loop-by-pyspy passes
        wrong = httpx.post(url + "/recordings", json=settings, headers=_auth("not-the-token-at-all"), timeout=30)
        assert wrong.status_code == 401
        assert httpx.post(url + "/recordings", json=settings, timeout=30).status_code == 401
        assert not runs.exists() or not any(runs.iterdir()), "nothing may start without the token"

        first = httpx.post(url + "/recordings", json=settings, headers=_auth(), timeout=60)
        assert first.status_code == 201, first.text
        second = httpx.post(url + "/recordings", json=settings, headers=_auth(), timeout=60)
        assert second.status_code == 409 and "is running" in second.json()["error"]
        rid = first.json()["id"]
        assert httpx.get(first.json()["url"] + "/health", timeout=10).status_code == 200
        stopped = httpx.post(f"{url}/recordings/{rid}/stop", headers=_auth(), timeout=60).json()
        assert stopped["files"] == ["server.log", "routes.json"]  # no profile: it was never asked to begin
        bad = httpx.post(url + "/recordings", json={"app": "x:y", "rm": "-rf"}, headers=_auth(), timeout=30)
        assert bad.status_code == 400 and "unknown settings: rm" in bad.json()["error"]
    with pytest.raises(httpx.ConnectError):  # the app it started is gone
        httpx.get(first.json()["url"] + "/health", timeout=5)


def test_profile_with_a_wrong_token_fails_in_one_line(tmp_path: Path) -> None:
    with agent(tmp_path) as (url, _, runs):
        wrong = tmp_path / "wrong"
        wrong.write_text("another-token-that-is-long-enough\n")
        result = loadlab("profile", "-T", "blocking-sleep", "--agent", url, "--agent-token-file", str(wrong),
                         "--out", str(tmp_path / "run"), timeout=60)  # fmt: skip
        assert not runs.exists() or not any(runs.iterdir())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: the agent at http://127.0.0.1:")
    assert "refused the token (401)" in result.stderr
