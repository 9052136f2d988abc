"""``loadlab agent``: the server side of a run, on the app's own host.

    loadlab agent --token-file TOKEN [--bind 127.0.0.1] [--port 8765] [--app-host 127.0.0.1]

``loadlab profile --agent URL --agent-token-file TOKEN`` drives the load from its own machine;
the agent starts the app under py-spy with loadlab's instrumentation (as a local run does), polls
the app's event loop once a second, and at the stop hands back the raw profile, the stall
records, the loop sampler's counts, the time series, the app's map and the server log. The
harness then writes the same run folder and report as a local run.

Every request carries ``Authorization: Bearer <token>`` (compared in constant time; 401 and
nothing done otherwise). One recording at a time (409 for a second); each is bounded in time
(``--max-seconds``) and its files in size; files are served from its own folder only. The agent
binds 127.0.0.1 unless told otherwise; the app listens on ``--app-host`` (the address the load
machine reaches it at).

    POST /recordings                 {"app": "pkg.main:app", ...}   → {"id", "url", "debug_prefix"}
    GET  /recordings/<id>                                           → its state
    POST /recordings/<id>/profile                                   → py-spy attaches: the load begins
    POST /recordings/<id>/stop                                      → the records, and its files
    GET  /recordings/<id>/files/<name>                              → one file of its folder
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hmac
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from loadlab.agent_client import SETTINGS, read_token
from loadlab.analysis.health import pyspy_warnings
from loadlab.config import ConfigError, ProfileConfig, check_bind
from loadlab.instrument import LOOP_SAMPLE_ENV
from loadlab.measure import all_stalls, loop_samples, samples_between
from loadlab.processes import ProcessError, ProfiledServer, free_port, upstream_stub, wait_ready
from loadlab.recording import Recording as Plan
from loadlab.results import RAW_PROFILE
from loadlab.ui_page import safe_file

MAX_BODY = 64 * 1024  # a recording's settings; nothing bigger is read
MAX_FILE = 512 * 1024 * 1024  # a file handed back (a raw profile of a long run is tens of MB)
MAX_SERIES = 3600  # one point a second
CHILDREN_LOG = "py-spy-children.log"
FILES = (RAW_PROFILE, "server.log", "py-spy.log", CHILDREN_LOG, "routes.json")
_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


@dataclass
class Recording:
    id: str
    folder: Path
    cfg: ProfileConfig
    server: ProfiledServer
    url: str
    debug_prefix: str | None
    children: contextlib.ExitStack  # the server, and the demo's upstream stub
    started: float = field(default_factory=time.monotonic)
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    samples_at_start: dict[int, dict[str, Any]] | None = None
    stop_polling: threading.Event = field(default_factory=threading.Event)


class Agent:
    """The recordings of one agent process; at most one runs."""

    def __init__(self, token: str, runs_dir: Path, app_host: str, max_seconds: float) -> None:
        self.token, self.runs_dir, self.app_host, self.max_seconds = token, runs_dir, app_host, max_seconds
        self.lock = threading.Lock()
        self.recordings: dict[str, Recording] = {}
        self.current: Recording | None = None
        # Children get a parent-death signal when the *thread* that started them ends; each request
        # has its own short-lived thread, so servers are started and stopped from this one.
        self.owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loadlab-agent-owner")

    def authorised(self, header: str | None) -> bool:
        given = (header or "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    def start(self, settings: dict[str, Any]) -> Recording:
        from loadlab.runner import LOOP_SAMPLE_HZ, PROFILE_STALL_MS, _debug_prefix, _server_command

        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(unknown)}; allowed: {', '.join(SETTINGS)}")
        cfg = ProfileConfig(**settings, bind=self.app_host)
        # The locustfile is the harness's business: any existing file passes that one check.
        dataclasses.replace(cfg, locustfile=Path(__file__)).validated()
        rid = time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex()
        folder = self.runs_dir / rid
        folder.mkdir(parents=True)
        children = contextlib.ExitStack()
        env = dict(os.environ)
        if cfg.is_demo_app:  # the demo's slow upstream, on this host too
            _, env["LOADLAB_UPSTREAM_URL"] = children.enter_context(upstream_stub(log_path=folder / "upstream.log"))
        port = free_port(self.app_host)
        argv, server_env = _server_command(cfg, port)
        env = {**env, **server_env, "LOADLAB_STALL_MS": str(PROFILE_STALL_MS)}
        # Recorded as `loadlab profile` records (loadlab.recording): py-spy, and a recorder per
        # child, attach when the harness says the load begins (POST …/profile), so the start-up and
        # the wait for the harness are not in the profile; the app's loop stacks are cut there too.
        # (at the load's start, not on demand: the children's recorders too)
        plan, profiler, recorders = dataclasses.replace(Plan.of(cfg), on_demand=False), None, None
        if cfg.profile:
            env[LOOP_SAMPLE_ENV] = str(LOOP_SAMPLE_HZ)
            env.update(plan.app_env())
            profiler = plan.pyspy_argv(folder / RAW_PROFILE)
            recorders = plan.child_recorders(folder / RAW_PROFILE, folder / CHILDREN_LOG)
        server = children.enter_context(
            ProfiledServer(
                argv, profiler_argv=profiler, env=env, log_path=folder / "server.log", attach=True,
                children=recorders,
            )
        )  # fmt: skip
        url = f"http://{self.app_host}:{port}"
        try:
            wait_ready(server, url + cfg.health_path, timeout=cfg.ready_timeout, any_status=True)
            with httpx.Client(timeout=5.0) as client:
                prefix = _debug_prefix(client, url) if cfg.instrument else None
                if prefix is not None:
                    (folder / "routes.json").write_text(client.get(f"{url}{prefix}/debug/routes").text)
        except BaseException:
            children.close()
            raise
        recording = Recording(rid, folder, cfg, server, url, prefix, children)
        threading.Thread(target=self._poll, args=(recording,), daemon=True, name=f"poll-{rid}").start()
        return recording

    def _poll(self, rec: Recording) -> None:
        """Once a second: the app's loop and threadpool (the time series); stops the recording
        when it overruns ``max_seconds``."""
        with httpx.Client(timeout=2.0) as client:
            while not rec.stop_polling.wait(1.0):
                t = round(time.monotonic() - rec.started, 2)
                if t > self.max_seconds:
                    with contextlib.suppress(Exception):
                        self.owner.submit(self.stop, rec.id).result()
                    return
                point: dict[str, Any] = {"t": t}
                if rec.debug_prefix is not None:
                    try:
                        point.update(
                            client.get(f"{rec.url}{rec.debug_prefix}/debug/loop", params={"window_s": 1}).json()
                        )
                    except (httpx.HTTPError, ValueError):
                        point["unanswered"] = True
                if len(rec.timeseries) < MAX_SERIES:
                    rec.timeseries.append(point)

    def begin(self, rec: Recording) -> int | None:
        """The load begins: py-spy attaches, and the loop sampler's record starts here too."""
        if rec.debug_prefix is not None:
            debug = f"{rec.url}{rec.debug_prefix}/debug"
            rec.samples_at_start = loop_samples(debug, rec.cfg.workers)
            if rec.server.children is not None:
                rec.server.children.mark_loop_start(debug)
        return rec.server.start_profiler()

    def stop(self, rid: str) -> dict[str, Any]:
        rec = self.recordings[rid]
        with self.lock:
            if rec.result is not None:
                return rec.result
            rec.stop_polling.set()
            records: dict[str, Any] = {}
            if rec.debug_prefix is not None:
                debug = f"{rec.url}{rec.debug_prefix}/debug"
                stalls = all_stalls(debug, rec.cfg.workers)
                if stalls is not None:
                    records["stalls"] = stalls
                by_pid = loop_samples(debug, rec.cfg.workers)
                if by_pid and (merged := samples_between(rec.samples_at_start, by_pid))["ticks"]:
                    records["loop_samples"] = merged
                if rec.server.children is not None:
                    rec.server.children.take_loop_stacks(debug)
            records["leftover_pids"] = rec.server.stop()
            rec.children.close()
            records["profiler_exit_code"] = rec.server.spy_exit_code
            records["profiler_warnings"] = pyspy_warnings(rec.server.spy_log)
            if rec.cfg.profile and rec.server.spy is not None:
                records["profiler"] = rec.server.children_summary or {"mode": "subprocesses", "rate": rec.cfg.rate}
                if rec.server.children is not None:
                    records["profiler_warnings"] += pyspy_warnings(rec.server.children.log_path)
            if rec.cfg.profile and rec.server.spy is None:
                records["profile_error"] = "py-spy never started: the harness never said the load began"
            records["timeseries"] = rec.timeseries
            records["files"] = [name for name in FILES if (rec.folder / name).is_file()]
            rec.result = records
            if self.current is rec:
                self.current = None
            return records


def _handler(agent: Agent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "loadlab-agent"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            print(f"agent: {self.address_string()} {format % args}", file=sys.stderr, flush=True)

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            if agent.authorised(self.headers.get("Authorization")):
                return True
            self._send(HTTPStatus.UNAUTHORIZED, {"error": "a valid 'Authorization: Bearer <token>' is required"})
            return False

        def _recording(self, rid: str) -> Recording | None:
            rec = agent.recordings.get(rid) if _ID.fullmatch(rid) else None
            if rec is None:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no recording {rid!r}"})
            return rec

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            if not self._allowed():
                return
            parts = self.path.strip("/").split("/")
            if parts == ["recordings"]:
                self._start()
            elif len(parts) == 3 and parts[0] == "recordings" and parts[2] == "profile":
                if (rec := self._recording(parts[1])) is not None:
                    pid = agent.owner.submit(agent.begin, rec).result() if rec.result is None else None
                    self._send(HTTPStatus.OK, {"profiler_pid": pid})
            elif len(parts) == 3 and parts[0] == "recordings" and parts[2] == "stop":
                if (rec := self._recording(parts[1])) is not None:
                    self._send(HTTPStatus.OK, agent.owner.submit(agent.stop, rec.id).result())
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "no such route"})

        def _start(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": f"settings over {MAX_BODY} bytes"})
                return
            try:
                settings = json.loads(self.rfile.read(length) or b"{}")
                assert isinstance(settings, dict)
            except (ValueError, AssertionError):
                self._send(HTTPStatus.BAD_REQUEST, {"error": "the body must be a JSON object of settings"})
                return
            if not agent.lock.acquire(blocking=False):
                self._send(HTTPStatus.CONFLICT, {"error": "a recording is being started or stopped"})
                return
            try:
                if agent.current is not None:
                    self._send(
                        HTTPStatus.CONFLICT, {"error": f"recording {agent.current.id} is running; stop it first"}
                    )
                    return
                rec = agent.owner.submit(agent.start, settings).result()
                agent.recordings[rec.id] = agent.current = rec
            except (ConfigError, TypeError) as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
                return
            except ProcessError as exc:
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"the app did not start: {exc}"})
                return
            finally:
                agent.lock.release()
            self._send(HTTPStatus.CREATED, {"id": rec.id, "url": rec.url, "debug_prefix": rec.debug_prefix})

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if not self._allowed():
                return
            parts = self.path.strip("/").split("/", 3)
            if len(parts) == 2 and parts[0] == "recordings":
                if (rec := self._recording(parts[1])) is not None:
                    state = "stopped" if rec.result is not None else "running"
                    self._send(HTTPStatus.OK, {"id": rec.id, "state": state, "url": rec.url})
            elif len(parts) == 4 and parts[0] == "recordings" and parts[2] == "files":
                if (rec := self._recording(parts[1])) is not None:
                    self._file(rec, parts[3])
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": "no such route"})

        def _file(self, rec: Recording, name: str) -> None:
            path = safe_file(rec.folder.resolve(), name) if name in FILES and rec.result is not None else None
            if path is None or path.stat().st_size > MAX_FILE:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no file {name!r} for this recording (yet)"})
                return
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)

    return Handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadlab agent", description=__doc__.split("\n")[0])
    parser.add_argument("--token-file", type=Path, required=True, help="the shared secret (one line, ≥ 16 chars)")
    parser.add_argument("--bind", default="127.0.0.1", help="where the agent listens (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--app-host", default="127.0.0.1", help="where the app listens, as the load reaches it")
    parser.add_argument("--runs-dir", type=Path, default=Path("profiles/agent"))
    parser.add_argument("--max-seconds", type=float, default=3600.0, help="a recording stops by itself after this")
    args = parser.parse_args(argv)
    try:
        token = read_token(args.token_file)
        check_bind(args.bind)
        check_bind(args.app_host, "--app-host")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    agent = Agent(token, args.runs_dir, args.app_host, args.max_seconds)
    signal.signal(signal.SIGTERM, lambda signum, frame: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        httpd = ThreadingHTTPServer((args.bind, args.port), _handler(agent))
    except OSError as exc:
        print(
            f"error: cannot listen on {args.bind}:{args.port} ({exc.strerror}); pick another with --port",
            file=sys.stderr,
        )
        return 2
    if args.bind not in ("127.0.0.1", "localhost"):
        print(f"warning: the agent listens on {args.bind}, reachable from other machines", file=sys.stderr)
    print(f"loadlab agent on http://{args.bind}:{httpd.server_port}; recordings in {args.runs_dir}/", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        if agent.current is not None:
            with contextlib.suppress(Exception):
                agent.owner.submit(agent.stop, agent.current.id).result()  # no server outlives the agent
        agent.owner.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
