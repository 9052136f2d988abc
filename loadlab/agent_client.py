"""The harness's side of ``loadlab profile --agent URL``: ask a ``loadlab agent`` (see
:mod:`loadlab.agent`) to start the app under py-spy on its host, and fetch the records at the end."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import httpx

from loadlab.config import ConfigError, ProfileConfig
from loadlab.redact import redact_url

# What the harness may ask of the agent: how to serve and profile the app (not where: the agent decides).
SETTINGS = (
    "app", "factory", "workers", "server", "loop", "rate", "native", "nonblocking", "loop_by_app", "profile",
    "instrument", "health_path",
)  # fmt: skip
START_TIMEOUT_S = 90.0  # the app's start-up, on the agent's host
STOP_TIMEOUT_S = 90.0  # the server's stop and py-spy writing its profile


class AgentError(RuntimeError):
    """The agent refused, failed or could not be reached; the message says which, in one line."""


def read_token(path: Path, flag: str = "--token-file") -> str:
    """The shared secret from ``path``: one line of at least 16 characters."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: {exc.strerror}") from None
    if len(token) < 16 or "\n" in token:
        raise ConfigError(f"{flag} {path}: the token must be one line of at least 16 characters")
    return token


class AgentClient:
    """One recording on one agent; leaving the ``with`` block stops it if the run did not."""

    def __init__(self, url: str, token_file: Path) -> None:
        self.url = url.rstrip("/")
        token = read_token(token_file, "--agent-token-file")
        self.http = httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=STOP_TIMEOUT_S)
        self.recording: str | None = None
        self.stopped = False

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.recording is not None and not self.stopped:
            with contextlib.suppress(AgentError, httpx.HTTPError):
                self._call("POST", f"/recordings/{self.recording}/stop")
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            answer = self.http.request(method, self.url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise AgentError(
                f"the agent at {redact_url(self.url)} does not answer ({type(exc).__name__}: {exc})"
            ) from None
        if answer.status_code == 401:
            raise AgentError(f"the agent at {redact_url(self.url)} refused the token (401): check --agent-token-file")
        if answer.status_code >= 400:
            try:
                why = answer.json().get("error", answer.text)
            except ValueError:
                why = answer.text[:200]
            raise AgentError(f"the agent answered {answer.status_code}: {why}")
        return answer

    def start(self, cfg: ProfileConfig) -> dict[str, Any]:
        settings = {key: getattr(cfg, key) for key in SETTINGS}
        started: dict[str, Any] = self._call("POST", "/recordings", json=settings, timeout=START_TIMEOUT_S).json()
        self.recording = started["id"]
        return started

    def begin(self) -> None:
        """The load begins: py-spy attaches to the server now."""
        assert self.recording is not None
        self._call("POST", f"/recordings/{self.recording}/profile")

    def stop(self, into: Path) -> dict[str, Any]:
        """Stop the recording; write its files into ``into``; return its records."""
        assert self.recording is not None
        records: dict[str, Any] = self._call("POST", f"/recordings/{self.recording}/stop").json()
        self.stopped = True
        for name in records.get("files", []):
            if "/" in name or name.startswith("."):
                continue  # only plain names of the recording's own files
            with open(into / name, "wb") as f:
                f.write(self._call("GET", f"/recordings/{self.recording}/files/{name}").content)
        return records
