"""The Locust side of ``loadlab ui``: each test's outputs, a Tags field, and the Profile tab.

Loaded into Locust's own process beside the user's locustfile (``-f theirs.py,<this file>``), never
imported by the rest of loadlab (Locust monkey-patches its process with gevent). It talks to
``loadlab ui`` through files in the session folder (``LOADLAB_UI_SESSION``):

* each test started from the web UI gets ``test-<n>/``; this module writes ``ui-test.json`` there
  when the test starts (users, spawn rate, host, tags), adds each Edit of the user count, and at
  the test's end writes Locust's outputs for that test alone (``locust.json``, ``locust_*.csv``,
  ``locust.html``), then marks it ``stopped``;
* ``loadlab ui`` records py-spy while the test runs, writes ``live.json`` (the loop so far) and,
  after the stop, the run's ``run.json``, report and flame graphs in the same folder.

The Profile tab is declared through Locust's documented extension points (``extended_tabs``,
``extended_tables``, routes on ``environment.web_ui.app``); its full page, ``/loadlab/profile``,
is shown inside the tab. Files are served from the session folder only.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Response, abort, jsonify, redirect, request, send_file
from locust import events
from locust.env import Environment
from locust.html import get_html_report
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadlab.ui_page import page_state, profile_page, read_json, safe_file, test_folders

SESSION_VAR = "LOADLAB_UI_SESSION"
NO_PROFILE_VAR = "LOADLAB_UI_NO_PROFILE"
TAB = "loadlab-profile"
TEST_FILE = "ui-test.json"
TAGS_FIELD = "loadlab_tags"

COLUMNS = [{"key": "what", "title": "Profile"}, {"key": "value", "title": ""}, {"key": "detail", "title": ""}]


def _session() -> Path | None:
    raw = os.environ.get(SESSION_VAR)
    return Path(raw).resolve() if raw else None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # readers never see half a file


class _Tests:
    """What this Locust process knows about the tests started from its web UI."""

    def __init__(self, environment: Environment, session: Path) -> None:
        self.env = environment
        self.session = session
        self.current: Path | None = None
        self.started = 0.0
        self.form: dict[str, str] = {}
        self.original_tasks: list[tuple[Any, list[Any]]] = []
        self.tags_arg: list[str] | None = None

    # Tags: Locust filters tasks by tag once, destructively; a form that may change them per test
    # restores each class's task list before the next start and filters again.
    def remember_tasks(self) -> None:
        seen: set[int] = set()

        def walk(holder: Any) -> None:
            if id(holder) in seen or not hasattr(holder, "tasks"):
                return
            seen.add(id(holder))
            self.original_tasks.append((holder, list(holder.tasks)))
            for task in holder.tasks:
                walk(task)

        for user_class in self.env.user_classes:
            walk(user_class)

    def apply_tags(self, raw: str) -> None:
        tags = [t for t in re.split(r"[,\s]+", raw.strip()) if t] or None
        if tags is not None:
            tags.append("canary")  # loadlab's idle probe (the demo's CanaryUser) survives any selection
        for holder, tasks in self.original_tasks:
            holder.tasks = list(tasks)
        self.env.tags = tags
        self.env._tasks_filtered = False  # noqa: SLF001 — Locust filters again at the next start

    def start(self) -> None:
        numbers = [int(p.name.split("-")[1]) for p in test_folders(self.session)]
        folder = self.session / f"test-{max(numbers, default=0) + 1}"
        folder.mkdir()
        self.current, self.started = folder, time.time()
        runner = self.env.runner
        tags = self.env.tags if self.env.tags is not None else getattr(self.env.parsed_options, "tags", None)
        tags = [t for t in tags or [] if t != "canary"]
        _write(
            folder / TEST_FILE,
            {
                "test": int(folder.name.split("-")[1]),
                "state": "running",
                "started_at": self.started,
                "stopped_at": None,
                "users": _int(self.form.get("user_count"), getattr(runner, "target_user_count", None)),
                "spawn_rate": _float(self.form.get("spawn_rate"), getattr(self.env.parsed_options, "spawn_rate", None)),
                "host": self.env.host or getattr(self.env.parsed_options, "host", None),
                "tags": list(tags) if tags else [],
                "edits": [],
                "outputs": False,
            },
        )

    def edit(self, users: int | None, spawn_rate: float | None) -> None:
        if self.current is None or users is None:
            return
        data = read_json(self.current / TEST_FILE)
        if data is None or data["state"] != "running":
            return
        data["edits"].append({"t": round(time.time() - self.started, 2), "users": users, "spawn_rate": spawn_rate})
        _write(self.current / TEST_FILE, data)

    def stop(self) -> None:
        folder, self.current = self.current, None
        if folder is None:
            return
        data = read_json(folder / TEST_FILE) or {}
        data.update(state="stopped", stopped_at=time.time())
        try:
            self._outputs(folder)
            data["outputs"] = True
        except Exception as exc:  # the run is still analysed; health says Locust's figures are missing
            data["outputs_error"] = f"{type(exc).__name__}: {exc}"
        _write(folder / TEST_FILE, data)

    def _outputs(self, folder: Path) -> None:
        runner = self.env.runner
        assert runner is not None
        writer = StatsCSV(self.env, PERCENTILES_TO_REPORT)
        for name, write in (
            ("locust_stats.csv", writer.requests_csv),
            ("locust_failures.csv", writer.failures_csv),
            ("locust_exceptions.csv", writer.exceptions_csv),
        ):
            with open(folder / name, "w", newline="", encoding="utf-8") as f:
                write(csv.writer(f))
        html_report: Any = get_html_report  # untyped in Locust
        (folder / "locust.html").write_text(html_report(self.env, show_download_link=False), encoding="utf-8")
        self._history(folder / "locust_stats_history.csv", runner.stats.history)
        # Locust's --json-file format; not its save_stats_json, which resets each entry it writes
        # (the UI's own tables would then show zeros after the stop).
        entries = [e.serialize() for e in runner.stats.entries.values() if e.num_requests or e.num_failures]
        (folder / "locust.json").write_text(json.dumps(entries, indent=2))

    @staticmethod
    def _history(path: Path, history: list[dict[str, Any]]) -> None:
        """The web UI's chart history in the columns of Locust's ``--csv`` history file, so the
        report draws a UI test's throughput and latency as it does a headless run's."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            out.writerow(["Timestamp", "User Count", "Type", "Name", "Requests/s", "50%", "95%", "99%"])
            for point in history:
                try:
                    stamp = datetime.fromisoformat(str(point["time"]).replace("Z", "+00:00")).timestamp()
                except (KeyError, ValueError):
                    continue
                p50 = point.get("response_time_percentile_0.5", [None, "N/A"])[1]
                p95 = point.get("response_time_percentile_0.95", [None, "N/A"])[1]
                rps = point.get("current_rps", [None, 0])[1]
                users = point.get("user_count", [None, 0])[1]
                out.writerow([int(stamp), users, "", "Aggregated", rps, p50, p95, "N/A"])


def _int(text: str | None, fallback: Any) -> int | None:
    try:
        return int(text) if text else (int(fallback) if fallback is not None else None)
    except ValueError:
        return None


def _float(text: str | None, fallback: Any) -> float | None:
    try:
        return float(text) if text else (float(fallback) if fallback is not None else None)
    except ValueError:
        return None


def tab_rows(session: Path) -> list[dict[str, str]]:
    """The Profile tab's table: one line on where things stand; the page below it has the rest
    (Locust stops polling this table when a test stops, so it must not hold what changes after)."""
    folders = test_folders(session)
    if not folders:
        return [_row("No test yet", "", "start one: it is profiled from Start to Stop; its diagnosis shows below")]
    note = "nothing is recorded (--no-profile)" if os.environ.get(NO_PROFILE_VAR) else "each test's profile shows below"
    return [_row(f"{len(folders)} test(s) this session", "", note)]


def _row(what: str, value: str, detail: str) -> dict[str, str]:
    return {"what": what, "value": value, "detail": detail}


# Shows /loadlab/profile inside the Profile tab: Locust's tables hold text only.
TAB_SCRIPT = """
(function () {
  function place() {
    var tab = new URLSearchParams(window.location.search).get("tab");
    var frame = document.getElementById("loadlab-profile-frame");
    if (tab !== "%(tab)s") { if (frame) frame.remove(); return; }
    if (frame) {  // as tall as its page, which grows as the flame graph loads
      var doc = frame.contentDocument;
      if (doc && doc.documentElement) frame.style.height = (doc.documentElement.scrollHeight + 30) + "px";
      return;
    }
    var table = document.querySelector(".MuiTableContainer-root");
    if (!table) return;
    frame = document.createElement("iframe");
    frame.id = "loadlab-profile-frame";
    frame.src = "%(page)s";
    frame.title = "loadlab profile";
    frame.style.cssText = "width:100%%;height:900px;border:0;margin-top:12px;background:#fff";
    table.parentNode.insertBefore(frame, table.nextSibling);
  }
  setInterval(place, 500);
})();
"""


def _add_tags_field(parser: Any) -> None:
    if os.environ.get(SESSION_VAR):
        parser.add_argument(
            f"--{TAGS_FIELD.replace('_', '-')}",
            default=os.environ.get("LOADLAB_UI_TAGS", ""),
            help="Tags of the tasks to run in this test (comma separated; empty: all)",
        )


def _profile_tab(environment: Environment, **_: Any) -> None:
    session = _session()
    web_ui = environment.web_ui
    if session is None or web_ui is None:
        return
    app: Any = web_ui.app  # Flask's decorators and Locust's hooks are untyped: registered by call
    hooks: Any = environment.events
    state = _Tests(environment, session)
    state.remember_tasks()
    tabs = web_ui.template_args.setdefault("extended_tabs", [])
    tabs.append({"title": "Profile", "key": TAB})
    web_ui.template_args.setdefault("extended_tables", []).append({"key": TAB, "structure": COLUMNS})

    def _started(**_: Any) -> None:
        state.start()

    def _stopped(**_: Any) -> None:
        state.stop()

    def _before_swarm() -> None:
        if request.path.rstrip("/").endswith("/swarm") and request.method == "POST":
            runner = environment.runner
            running = runner is not None and runner.state in ("spawning", "running")
            state.form = {k: request.form.get(k, "") for k in ("user_count", "spawn_rate")}
            if running:
                state.edit(_int(state.form["user_count"], None), _float(state.form["spawn_rate"], None))
            elif TAGS_FIELD in request.form:
                state.apply_tags(request.form[TAGS_FIELD])

    def _after(response: Response) -> Response:
        path = request.path.rstrip("/")
        if path.endswith("/stats/requests") and response.is_json:
            body = response.get_json()
            body.setdefault("extended_stats", []).append({"key": TAB, "data": tab_rows(session)})
            response.set_data(json.dumps(body))
        elif path == "" and response.mimetype == "text/html" and not response.direct_passthrough:
            script = TAB_SCRIPT % {"tab": TAB, "page": "./loadlab/profile"}
            response.set_data(response.get_data(as_text=True).replace("</body>", f"<script>{script}</script></body>"))
        return response

    def _page() -> Response:
        return Response(profile_page(session), mimetype="text/html")

    def _state() -> Response:
        return Response(page_state(session), mimetype="text/plain")

    def _tests() -> Response:
        return jsonify([{"name": p.name, **(read_json(p / TEST_FILE) or {})} for p in test_folders(session)])

    def _file(sub: str) -> Response:
        target = safe_file(session, sub)
        if target is None:
            abort(404)
        return send_file(target)

    def _compare() -> Any:
        a, b = request.args.get("a", ""), request.args.get("b", "")
        folders = {p.name for p in test_folders(session)}
        if a not in folders or b not in folders or a == b:
            abort(404)
        out = session / f"compare-{a}-{b}"
        if not (out / "comparison.html").is_file():
            done = subprocess.run(
                [sys.executable, "-m", "loadlab", "compare", str(session / a), str(session / b), "--out", str(out)],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip
            if done.returncode != 0 or not (out / "comparison.html").is_file():
                return Response(f"loadlab compare failed:\n{done.stderr[-2000:]}", status=500, mimetype="text/plain")
        return redirect(f"./runs/{out.name}/comparison.html")

    hooks.test_start.add_listener(_started)
    hooks.test_stop.add_listener(_stopped)
    app.before_request(_before_swarm)
    app.after_request(_after)
    app.add_url_rule("/loadlab/profile", view_func=_page)
    app.add_url_rule("/loadlab/tests", view_func=_tests)
    app.add_url_rule("/loadlab/profile-state", view_func=_state)
    app.add_url_rule("/loadlab/runs/<path:sub>", view_func=_file)
    app.add_url_rule("/loadlab/compare", view_func=_compare)


_events: Any = events
_events.init_command_line_parser.add_listener(_add_tags_field)
_events.init.add_listener(_profile_tab)
