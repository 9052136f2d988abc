"""The page inside the web UI's Profile tab: the latest test (live, then its verdicts and the
event-loop flame graph), and every test of this ``loadlab ui`` session with a comparison link.

Built from the session folder's files alone (``ui-test.json``, ``live.json``, ``run.json``); the
files it links to are served by :mod:`loadlab.ui_plugin` from that folder only. Light on imports:
it runs inside Locust's (gevent) process.
"""

from __future__ import annotations

import json
import os
import re
from html import escape
from pathlib import Path
from typing import Any

TEST_DIR = re.compile(r"test-\d+")
REFRESH_S = 3

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 4px;color:#222}
h2{font-size:17px;margin:14px 0 6px} h3{font-size:15px;margin:12px 0 4px}
table{border-collapse:collapse;margin:4px 0 10px} td,th{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f4f4f4} .problem{color:#a30000} .warning{color:#8a5a00} .ok{color:#1d6b1d} .info{color:#333}
.muted{color:#666} iframe.flame{width:100%;height:520px;border:1px solid #ccc}
"""


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def test_folders(session: Path) -> list[Path]:
    found = [p for p in session.iterdir() if p.is_dir() and TEST_DIR.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def safe_file(session: Path, sub: str) -> Path | None:
    """``session/sub`` if it is a file inside the session folder, else None: no ``..``, no
    absolute path, no symlink that leads out."""
    if not sub or sub.startswith(("/", "\\")) or any(part in ("..", "") for part in sub.split("/")):
        return None
    target = (session / sub).resolve()
    if not target.is_relative_to(session) or not target.is_file():
        return None
    return target


def _link(path: str, text: str) -> str:
    return f'<a href="./runs/{escape(path)}" target="_blank">{escape(text)}</a>'


def is_analysed(run: dict[str, Any] | None) -> bool:
    """The test's folder is final: analysed, reported (or failed, saying why)."""
    return run is not None and bool((run.get("ui") or {}).get("analysed"))


def _phase(info: dict[str, Any], run: dict[str, Any] | None) -> str:
    """running → analysing → the run's status."""
    if info.get("state") == "running":
        return "running"
    if not is_analysed(run):
        return "analysing"
    assert run is not None
    return str(run["status"])


def _blockers_table(blockers: list[dict[str, Any]]) -> str:
    rows = [
        f"<tr><td><code>{escape(str(b.get('function')))}</code></td><td>{escape(str(b.get('kind') or ''))}</td>"
        f"<td>{escape(str(b.get('place') or ''))}</td><td>{escape(str(b.get('route') or ''))}</td>"
        f"<td>{b.get('share', 0):.0%}</td><td class=muted>{escape(os.path.basename(str(b.get('file') or '')))}"
        f":{escape(str(b.get('line') or ''))}</td></tr>"
        for b in blockers
    ]
    if not rows:
        return "<p class=muted>Nothing of the app's own code held the loop.</p>"
    head = "<tr><th>function</th><th>kind</th><th>place</th><th>route</th><th>share</th><th>where</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _latest(folder: Path, no_profile: bool) -> str:
    info = read_json(folder / "ui-test.json") or {}
    run = read_json(folder / "run.json")
    phase = _phase(info, run)
    tags = ", ".join(info.get("tags") or []) or "all tasks"
    out = [f"<h2>{folder.name}: {escape(phase)}</h2>"]
    host = f", host {escape(str(info['host']))}" if info.get("host") else ""  # empty: Locust's -H, the app
    out.append(f"<p class=muted>{info.get('users', '?')} users, tags: {escape(tags)}{host}</p>")
    if phase == "running":
        live = read_json(folder / "live.json") or {}
        if no_profile:
            out.append("<p>Nothing is recorded: <code>loadlab ui</code> runs with <code>--no-profile</code>.</p>")
        busy = live.get("busy_share")
        if busy is not None:
            out.append(f"<p>Event loop busy so far: <b>{busy:.0%}</b> of {live.get('seconds', 0):.0f} s.</p>")
        if live.get("note"):
            out.append(f"<p class=muted>{escape(str(live['note']))}</p>")
        out.append("<h3>Top blockers so far</h3>" + _blockers_table(live.get("blockers", [])))
        return "".join(out)
    if phase == "analysing" or run is None:
        out.append("<p>Stopped; analysing the recording (flame graphs, verdicts)…</p>")
        return "".join(out)
    if run.get("reason"):
        out.append(f"<p class=problem>{escape(str(run['reason']))}</p>")
    verdicts = (run.get("report") or {}).get("verdicts") or []
    if verdicts:
        items = "".join(f"<li class={escape(v['level'])}>{escape(v['text'])}</li>" for v in verdicts)
        out.append(f"<h3>Verdicts</h3><ul>{items}</ul>")
    loop = (run.get("analysis") or {}).get("loop") or {}
    if loop:
        blockers = [b for b in loop.get("blockers") or [] if b.get("file")][:8]
        out.append(f"<h3>What held the event loop ({loop.get('busy_share', 0):.0%} busy)</h3>")
        out.append(_blockers_table(blockers))
    artefacts = run.get("artefacts") or {}
    links = [_link(f"{folder.name}/report.html", "report.html")] if "report_html" in artefacts else []
    links.append(_link(f"{folder.name}/run.json", "run.json"))
    links += [
        _link(f"{folder.name}/{name}", name) for key, name in sorted(artefacts.items()) if key.startswith("flamegraph")
    ]
    out.append(f"<p>Run folder <code>{escape(str(folder))}</code>: {' · '.join(links)}</p>")
    if "flamegraph_loop" in artefacts:
        src = f"./runs/{folder.name}/{artefacts['flamegraph_loop']}"
        # As tall as the graph: the frames that held the loop are at its bottom.
        fit = "this.style.height=(this.contentDocument.documentElement.scrollHeight+20)+'px'"
        out.append(
            "<h3>Event-loop flame graph <span class=muted>(click a frame to zoom)</span></h3>"
            f'<iframe class=flame src="{escape(src)}" onload="{fit}"></iframe>'
        )
    elif no_profile or not run.get("config", {}).get("profile", True):
        out.append("<p class=muted>No flame graph: nothing is recorded with <code>--no-profile</code>.</p>")
    return "".join(out)


def _all_tests(folders: list[Path]) -> str:
    rows = []
    for folder in reversed(folders):
        info = read_json(folder / "ui-test.json") or {}
        run = read_json(folder / "run.json")
        total = next((s for s in (run or {}).get("stats", []) if s.get("name") == "Aggregated"), None)
        loop = ((run or {}).get("analysis") or {}).get("loop") or {}
        top = next((b for b in loop.get("blockers") or [] if b.get("file")), None)
        report = _link(f"{folder.name}/report.html", "report") if (folder / "report.html").is_file() else ""
        rps = f"{total['rps']:.0f}" if total else "-"
        busy = f"{loop['busy_share']:.0%}" if loop.get("busy_share") is not None else "-"
        blocker = f"<code>{escape(top['function'])}</code> {top['share']:.0%}" if top else "-"
        tags = escape(", ".join(info.get("tags") or []) or "all")
        cells = [folder.name, escape(_phase(info, run)), str(info.get("users", "?")), tags, rps, busy, blocker, report]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    titles = ("test", "status", "users", "tags", "req/s", "loop busy", "top blocker", "")
    head = "<tr>" + "".join(f"<th>{t}</th>" for t in titles) + "</tr>"
    options = "".join(f"<option>{f.name}</option>" for f in reversed(folders))
    compare = ""
    if len(folders) >= 2:
        second = "".join(
            f"<option{' selected' if i == 1 else ''}>{f.name}</option>" for i, f in enumerate(reversed(folders))
        )
        compare = (
            '<form action="./compare" target="_blank">Compare <select name=a>' + second + "</select> with "
            f"<select name=b>{options}</select> <button>compare</button></form>"
        )
    return f"<h2>Tests in this session</h2><table>{head}{''.join(rows)}</table>{compare}"


def page_state(session: Path) -> str:
    """What the page shows, in one token: each test and its phase."""
    tests = test_folders(session)
    return ";".join(f"{f.name}={_phase(read_json(f / 'ui-test.json') or {}, read_json(f / 'run.json'))}" for f in tests)


def _reload_on_change(token: str) -> str:
    return (
        "<script>setInterval(function(){fetch('./profile-state').then(function(r){return r.text()})"
        f".then(function(t){{if(t!=={json.dumps(token)})location.reload()}})}},{REFRESH_S * 1000})</script>"
    )


def profile_page(session: Path) -> str:
    """The whole page; it reloads itself while a test runs or is being analysed."""
    folders = test_folders(session)
    no_profile = bool(os.environ.get("LOADLAB_UI_NO_PROFILE"))
    busy = False
    if not folders:
        body = "<h2>No test yet</h2><p>Start one from the form: it is profiled from Start to Stop.</p>"
        body += "<p class=muted>Nothing is recorded: <code>--no-profile</code>.</p>" if no_profile else ""
        busy = True  # keep looking for the first test
    else:
        latest = folders[-1]
        busy = _phase(read_json(latest / "ui-test.json") or {}, read_json(latest / "run.json")) in (
            "running",
            "analysing",
        )
        body = _latest(latest, no_profile) + _all_tests(folders)
    # Reloads itself every few seconds while a test runs or is analysed (the live view), and
    # otherwise only when a test starts or ends: a flame graph being read is not reset under the reader.
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if busy else _reload_on_change(page_state(session))
    return (
        f"<!doctype html><html><head><meta charset=utf-8>{refresh}<title>loadlab profile</title>"
        f"<style>{STYLE}</style></head><body>{body}"
        f"<p class=muted>Session folder: <code>{escape(str(session))}</code></p></body></html>"
    )
