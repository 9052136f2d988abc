"""``loadlab tour``: one short experiment per claim of FastAPI's "Concurrency and async / await"
page, and one report — the claim, the measurement, the verdict, with its number.

The runs are ordinary runs (``run_once``), so each keeps its own report; the judging is pure
(``judge``) and tested on its own.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from loadlab.analysis.mix import WHAT_IF_TWINS, what_if_check
from loadlab.analysis.theory import canary_damage
from loadlab.config import ProfileConfig
from loadlab.progress import Progress
from loadlab.render.html import STYLE, inline_code
from loadlab.results import endpoint_rows, new_run_dir, point_latest, write_json


@dataclass(frozen=True)
class TourRun:
    name: str
    scenario: str
    tag: str
    profile: bool = True


RUNS = (
    TourRun("blocking-sleep", "io", "blocking-sleep"),
    TourRun("async-sleep", "io", "async-sleep"),
    TourRun("threadpool-sleep", "io", "threadpool-sleep"),
    TourRun("helper-sleep", "io", "helper-sleep"),
    TourRun("offload-sleep", "io", "offload-sleep"),
    TourRun("cpu-async", "cpu", "async"),
    TourRun("deps-sync", "deps", "sync"),
    # Throughput comparisons without py-spy: pausing the app to sample would blur them.
    TourRun("trivial-async", "trivial", "async", profile=False),
    TourRun("trivial-sync", "trivial", "sync", profile=False),
    TourRun("cpu-threadpool", "cpu", "threadpool", profile=False),
    TourRun("cpu-process", "cpu", "process", profile=False),
)


def _rps(run: dict[str, Any]) -> float:
    return float(sum(s["rps"] for s in endpoint_rows(run)))


def _busy(run: dict[str, Any]) -> float | None:
    busy = ((run.get("analysis") or {}).get("loop") or {}).get("busy_share")
    return float(busy) if busy is not None else None


def _top(run: dict[str, Any]) -> str | None:
    blockers = ((run.get("analysis") or {}).get("loop") or {}).get("blockers") or []
    return str(blockers[0]["function"]) if blockers and blockers[0].get("file") else None


def _damage(run: dict[str, Any]) -> float:
    d = canary_damage(run)
    return float(d["p50_factor"]) if d else 0.0


def _service_ms(run: dict[str, Any]) -> float:
    probe = run.get("service_probe") or {}
    return float(next(iter(probe.values()), 0.0))


def _pct(x: float | None) -> str:
    return "?" if x is None else f"{x:.0%}"


Judge = Callable[[dict[str, dict[str, Any]]], tuple[str, str]]


def _blocking(r: dict[str, dict[str, Any]]) -> tuple[str, str]:
    b, a = r["blocking-sleep"], r["async-sleep"]
    ok = _rps(b) < 0.2 * _rps(a) and _damage(b) >= 10
    return ("confirmed" if ok else "refuted"), (
        f"`time.sleep` of {_service_ms(b):.0f} ms in `async def` served {_rps(b):.0f} req/s against {_rps(a):.0f} with "
        f"`await asyncio.sleep`; the loop was busy {_pct(_busy(b))} of the time, and the canary `/health`, "
        f"which does nothing, answered {_damage(b):,.0f}× slower than idle: every request in the process waited."
    )


def _def_offload(r: dict[str, dict[str, Any]]) -> tuple[str, str]:
    t, b = r["threadpool-sleep"], r["blocking-sleep"]
    ok = _rps(t) > 5 * _rps(b) and _damage(t) < 10
    return ("confirmed" if ok else "refuted"), (
        f"The same `time.sleep` in a `def` route: {_rps(t):.0f} req/s ({_rps(t) / max(_rps(b), 0.1):.0f}× the "
        f"`async def` version), loop busy {_pct(_busy(t))}, canary {_damage(t):.1f}× its idle latency. "
        "The limit is AnyIO's 40 threads: past 40 waiting requests, they queue for a thread."
    )


def _dependencies(r: dict[str, dict[str, Any]]) -> tuple[str, str]:
    d = r["deps-sync"]
    ok = (_busy(d) or 1) < 0.3 and _damage(d) < 10
    return ("confirmed" if ok else "refuted"), (
        f"A `def` dependency that blocks 50 ms under an `async def` route: {_rps(d):.0f} req/s, loop busy "
        f"{_pct(_busy(d))}, canary {_damage(d):.1f}× idle — it ran in the threadpool, like a `def` route "
        "(`/deps/mixed` shows each step's thread: every `def` in a worker, every `async def` on the loop)."
    )


def _helpers(r: dict[str, dict[str, Any]]) -> tuple[str, str]:
    h, b = r["helper-sleep"], r["blocking-sleep"]
    same = abs(_rps(h) - _rps(b)) <= 0.25 * max(_rps(b), 1)
    ok = same and _top(h) == "sync_helper_sleep"
    return ("confirmed" if ok else "refuted"), (
        f"An `async def` route calling a plain `def` helper that sleeps: {_rps(h):.0f} req/s, like the blocking "
        f"route ({_rps(b):.0f}); loadlab names `{_top(h)}` as what held the loop ({_pct(_busy(h))} busy). "
        "FastAPI offloads only the functions it calls itself."
    )


def _trivial(r: dict[str, dict[str, Any]]) -> tuple[str, str]:
    a, s = _rps(r["trivial-async"]), _rps(r["trivial-sync"])
    if not a or not s:
        return "inconclusive", "No throughput was measured for the trivial routes."
    hop_us = (1 / s - 1 / a) * 1e6
    verdict = "more nuanced" if hop_us > 1 else "confirmed"
    return verdict, (
        f"`async def` doing nothing: {a:.0f} req/s; `def` doing nothing: {s:.0f} req/s ({s / a:.2f}×). "
        f"The threadpool hop costs about {hop_us:.0f} µs of server time per request here, not the ~100 ns the page "
        "quotes for other frameworks: `async def` is cheaper, by far more than the page suggests "
        "(one server process, Locust on the same 2 cores; `make bench` measures it at two concurrencies)."
    )


def _cpu(r: dict[str, dict[str, Any]]) -> tuple[str, str]:
    t, p = _rps(r["cpu-threadpool"]), _rps(r["cpu-process"])
    ok = p > 1.2 * t
    return ("confirmed" if ok else "refuted"), (
        f"Pure-Python work (`/cpu/*`): {t:.0f} req/s in the threadpool, where the GIL lets one thread "
        "compute at a time, so 40 threads do no more than one; "
        f"{p:.0f} req/s in a process pool ({p / max(t, 0.1):.1f}×, on 2 cores shared with Locust). "
        "CPU-bound work wants parallelism: processes."
    )


CLAIMS: tuple[tuple[str, str, Judge], ...] = (
    ("1", "A blocking call inside an `async def` path operation stops every other request in the process.", _blocking),
    (
        "2",
        "A `def` path operation runs in an external threadpool and is awaited, so blocking there does not stop "
        "the loop.",
        _def_offload,
    ),  # fmt: skip
    ("3", "Dependencies follow the same rule: a `def` dependency runs in the threadpool.", _dependencies),
    (
        "4",
        "A utility function you call yourself is not offloaded: a `def` helper called from `async def` runs on "
        "the loop.",
        _helpers,
    ),  # fmt: skip
    ("5", 'For trivial work, `async def` is cheaper than `def` ("about 100 ns" in other frameworks).', _trivial),
    ("6", "CPU-bound work wants parallelism: threads don't help under the GIL, processes do.", _cpu),
)


# The tour's run of each variant the model's what-ifs are checked on (mix.WHAT_IF_TWINS).
TWIN_RUNS = {("io", "blocking-sleep"): "blocking-sleep", ("io", "threadpool-sleep"): "threadpool-sleep",
             ("io", "helper-sleep"): "helper-sleep", ("io", "offload-sleep"): "offload-sleep",
             ("cpu", "async"): "cpu-async", ("cpu", "process"): "cpu-process"}  # fmt: skip


def what_ifs(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of the demonstration's offloaded twins, predicted by the model from the blocking run
    and measured (a pair with a missing or failed run is left out)."""
    out = []
    for scenario, before, after, function in WHAT_IF_TWINS:
        source, twin = results.get(TWIN_RUNS[(scenario, before)]), results.get(TWIN_RUNS[(scenario, after)])
        check = what_if_check(source, twin, function) if source and twin else None
        if check and twin:
            profiled = bool((twin.get("config") or {}).get("profile", True))
            out.append(
                {"from": TWIN_RUNS[(scenario, before)], "twin": TWIN_RUNS[(scenario, after)], "twin_profiled": profiled}
                | check
            )
    return out


UNPROFILED = "; the twin ran without py-spy, whose pauses the blocking run paid"


def what_if_lines(checks: list[dict[str, Any]]) -> list[str]:
    """One sentence per check, for the tour's and the bench's reports."""
    return [
        f"{c['from']} → {c['twin']}: moving `{c['function']}` to {c['to']}, the model predicted "
        f"{c['predicted_rps']:.0f} req/s (from {c['before_rps']:.0f}); the twin measured {c['measured_rps']:.0f} "
        f"({c['ratio']:.0%}{'' if c.get('twin_profiled', True) else UNPROFILED})."
        for c in checks
    ]


def judge(results: dict[str, dict[str, Any]]) -> list[dict[str, str]]:
    """Each claim with its verdict and the sentence that carries the number."""
    out = []
    for key, claim, fn in CLAIMS:
        try:
            verdict, text = fn(results)
        except KeyError as exc:
            verdict, text = "inconclusive", f"the run {exc} is missing or failed"
        out.append({"claim_id": key, "claim": claim, "verdict": verdict, "measurement": text})
    return out


def run_tour(base: ProfileConfig, progress: Progress, duration: float = 5.0) -> Path:
    """Run every experiment, then write ``tour.json``, ``tour.md`` and ``tour.html``."""
    from loadlab.runner import run_once

    tour_dir = new_run_dir(base.profiles_dir, "tour", base.out)
    if base.out is None:
        point_latest(base.profiles_dir, tour_dir)
    progress.note(f"tour folder: {tour_dir}")
    results: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(RUNS, 1):
        progress.note(f"— experiment {i}/{len(RUNS)}: {r.name}")
        # Each run goes into its own folder in the tour's (run_dir): --out named the tour's.
        cfg = replace(
            base, scenario=r.scenario, tags=(r.tag,), variants=(), profile=r.profile, duration=duration, out=None
        )
        run_dir = tour_dir / r.name
        run_dir.mkdir()
        record = run_once(cfg.validated(), run_dir, progress, variant=r.name)
        if record["status"] == "complete":  # a failed or doubtful run judges no claim: "inconclusive"
            results[r.name] = record
        else:
            progress.note(f"{r.name} is {record['status']}: {record.get('reason')}")
    verdicts = judge(results)
    checks = what_ifs(results)
    write_json(tour_dir / "tour.json", {"claims": verdicts, "what_ifs": checks, "runs": [r.name for r in RUNS]})
    (tour_dir / "tour.md").write_text(tour_markdown(verdicts, checks), encoding="utf-8")
    (tour_dir / "tour.html").write_text(tour_html(verdicts, checks), encoding="utf-8")
    return tour_dir / "tour.html"


WHAT_IF_TITLE = "The model's what-ifs, made"
WHAT_IF_NOTE = "Each offloaded twin predicted from the blocking run by the queueing model of its mix, then measured."


def tour_markdown(verdicts: list[dict[str, str]], checks: list[dict[str, Any]] | None = None) -> str:
    lines = ["# The source page's claims, measured", ""]
    for v in verdicts:
        lines += [f"## {v['claim_id']}. {v['claim']}", "", f"**{v['verdict']}** — {v['measurement']}", ""]
    if checks:
        lines += [f"## {WHAT_IF_TITLE}", "", WHAT_IF_NOTE, ""] + [f"- {t}" for t in what_if_lines(checks)] + [""]
    return "\n".join(lines)


def tour_html(verdicts: list[dict[str, str]], checks: list[dict[str, Any]] | None = None) -> str:
    level = {"confirmed": "ok", "more nuanced": "warning", "refuted": "problem", "inconclusive": "warning"}
    body = "".join(
        f"<h2>{inline_code(v['claim_id'] + '. ' + v['claim'])}</h2>"
        f'<div class="v {level[v["verdict"]]}"><b>{html.escape(v["verdict"])}</b> — '
        f"{inline_code(v['measurement'])}</div>"
        for v in verdicts
    )
    if checks:
        body += f"<h2>{html.escape(WHAT_IF_TITLE)}</h2><p>{html.escape(WHAT_IF_NOTE)}</p><ul>"
        body += "".join(f"<li>{inline_code(t)}</li>" for t in what_if_lines(checks)) + "</ul>"
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>loadlab tour</title><style>{STYLE}</style>'
        "</head><body><h1>FastAPI's concurrency page, measured</h1>"
        '<p class="meta">One short experiment per claim; each run\'s own report is in its folder.</p>'
        f"{body}</body></html>"
    )
