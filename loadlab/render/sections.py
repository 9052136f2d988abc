"""The reports as data: every table and list the HTML and Markdown reports share, defined once.

The functions here turn a stored run (and the ``report`` dict :func:`loadlab.report.render_run`
computes: verdicts, theory, canary) or a comparison into sections whose cells are finished
strings; :mod:`loadlab.render.html` and :mod:`loadlab.render.markdown` only lay them out. A column
added here shows in both reports. What only HTML can show (charts, flame graphs, links) stays there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from loadlab.render._format import comparison_cell
from loadlab.results import stats_rows

__all__ = ["Report", "Section", "Table", "Verdicts", "comparison_table", "run_sections"]


@dataclass(frozen=True)
class Table:
    """A titled table. ``id`` is its anchor in HTML; ``note`` a sentence printed above it;
    ``empty``, when set, is said instead of a table with no rows."""

    id: str
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""
    empty: str = ""

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.headers):
                raise ValueError(f"table {self.id}: a row has {len(row)} cells for {len(self.headers)} headers")


@dataclass(frozen=True)
class Verdicts:
    """The verdicts, most serious first: ``(level, text)`` with level ``problem``, ``warning`` or ``ok``;
    text may hold `code` in backticks."""

    id: str
    title: str
    items: tuple[tuple[str, str], ...]


Section = Table | Verdicts


@dataclass(frozen=True)
class Report:
    """One run's report: a title, a line on how it was run, and its sections in order."""

    title: str
    meta: str
    sections: tuple[Section, ...]


def fmt(value: Any, spec: str = "{}") -> str:
    """A cell: ``-`` for a missing figure, else the value formatted with ``spec``."""
    return "-" if value is None else spec.format(value)


def _rows(items: Iterable[Any], cells: Callable[[Any], tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    return tuple(cells(i) for i in items)


def _theory(report: dict[str, Any]) -> Table:
    return Table(
        "theory",
        "Theory vs measured",
        ("endpoint", "model", "service ms", "users", "predicted req/s", "measured req/s")
        + ("measured/predicted", "limited by"),
        _rows(
            report["theory"],
            lambda r: (
                r["endpoint"],
                r["model"],
                fmt(r["service_ms"], "{:.1f}"),
                fmt(r["users"]),
                fmt(r["predicted_rps"], "{:.0f}"),
                fmt(r["measured_rps"], "{:.0f}"),
                fmt(r["ratio"], "{:.0%}"),
                fmt(r["limited_by"]),
            ),
        ),
        note="Ceiling by Little's law for the model each endpoint followed (inferred from where its samples ran);"
        ' service time = measured on the idle server after the load. See the README\'s "Reading the report".',
    )


def _model(report: dict[str, Any]) -> Table:
    model = report.get("model") or {}
    busy = ", ".join(f"{k} {v:.0%}" for k, v in (model.get("utilisation") or {}).items())
    return Table(
        "model",
        "The whole mix as a queueing model",
        ("route", "held ms per request (station: ms)", "delay ms", "predicted req/s", "measured req/s")
        + ("predicted ms", "measured ms"),
        _rows(
            model.get("routes") or [],
            lambda r: (
                r["route"],
                "; ".join(f"{k}: {v:g}" for k, v in r["demands_ms"].items()) or "-",
                fmt(r["delay_ms"], "{:.1f}"),
                fmt(r["predicted_rps"], "{:.0f}"),
                fmt(r["measured_rps"], "{:.0f}"),
                fmt(r["predicted_ms"], "{:.0f}"),
                fmt(r["measured_ms"], "{:.0f}"),
            ),
        ),
        note=(
            f"Mean value analysis of ~{model.get('users', 0):.0f} users thinking {model.get('think_ms', 0):.0f} ms "
            f"between requests: {model.get('predicted_rps', 0):.0f} req/s predicted, "
            f"{model.get('measured_rps', 0):.0f} measured. "
            f"Stations busy: {busy}. Bottleneck: {model.get('bottleneck')}. "
            'See the README\'s "Reading the report".'
        )
        if model
        else "",
        empty="No model: the run has no profile (or no requests) to measure demands from.",
    )


def _what_ifs(report: dict[str, Any]) -> Table:
    model = report.get("model") or {}
    return Table(
        "what-if",
        "What each fix would buy (the model)",
        ("blocker", "kind", "moved to", "the mix would reach req/s", "bottleneck then"),
        _rows(
            model.get("what_ifs") or [],
            lambda w: (
                w["function"],
                w["kind"] or "-",
                w["to"],
                fmt(w["predicted_rps"], "{:.0f}"),
                f"{w['bottleneck']} ({w['bottleneck_utilisation']:.0%})" if w["bottleneck"] else "-",
            ),
        ),
        note=f"Measured now: {model.get('measured_rps', 0):.0f} req/s." if model else "",
        empty="No blocker of the loop to move.",
    )


def _pools(run: dict[str, Any]) -> Table:
    pool = ((run.get("analysis") or {}).get("threadpool")) or {}
    by_pool: dict[str, list[str]] = {}
    for f in pool.get("by_function") or []:
        by_pool.setdefault(str(f.get("pool") or "AnyIO threadpool"), []).append(
            f"{f['function']}{' (' + f['route'] + ')' if f.get('route') else ''} {f['average_busy_workers']:g}"
        )
    return Table(
        "threads",
        "Threads that ran sync code (the threadpool view)",
        ("pool", "size", "threads seen", "average busy threads", "functions (route) average busy"),
        _rows(
            pool.get("pools") or [],
            lambda p: (
                p["pool"],
                fmt(p["size"]) if p["size"] is not None else "one per request",
                fmt(p["threads_seen"]),
                fmt(p["average_busy_workers"], "{:g}"),
                "; ".join(by_pool.get(p["pool"], [])[:4]) or "-",
            ),
        ),
        note="Each pool the app's sync code ran in: AnyIO's (Starlette, FastAPI, anyio.to_thread), the loop's "
        "default executor (Quart's run_sync, Falcon's sync_to_async, Litestar's sync_to_thread), asgiref's "
        "(Django: a thread per request; sync_to_async outside Django: one shared thread).",
    )


def _layers(run: dict[str, Any]) -> Table:
    loop = ((run.get("analysis") or {}).get("loop")) or {}
    framework = (run.get("analysis") or {}).get("framework") or "no framework recognised"
    return Table(
        "framework-layers",
        "The event loop outside your code, per layer",
        ("package", "layer", "share of the loop"),
        _rows(
            [x for x in loop.get("framework_layers") or [] if x["share"] >= 0.005],
            lambda x: (x["package"], x["layer"], fmt(x["share"], "{:.1%}")),
        ),
        note=f'What the blockers call "(library or runtime code)": the loop\'s samples with no frame of the app, '
        f"by the innermost frame of the framework ({framework}) or server that ran them.",
    )


def _canary(report: dict[str, Any]) -> Table:
    canary = report.get("canary")
    return Table(
        "canary",
        "Collateral damage (canary)",
        ("endpoint", "idle p50 ms", "under load p50 ms", "under load p99 ms", "p50 factor", "p99 factor"),
        _rows(
            [canary] if canary else [],
            lambda c: (
                c["endpoint"],
                fmt(c["idle_p50_ms"]),
                fmt(c["load_p50_ms"]),
                fmt(c["load_p99_ms"]),
                fmt(c["p50_factor"], "{:g}×"),
                fmt(c["p99_factor"], "{:g}×"),
            ),
        ),
        empty="No canary row in this run.",
    )


def _stats(run: dict[str, Any]) -> Table:
    return Table(
        "stats",
        "Endpoints (Locust)",
        ("name", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms"),
        _rows(
            stats_rows(run),
            lambda s: (
                s["name"],
                fmt(s["requests"]),
                fmt(s["failures"]),
                fmt(s["rps"]),
                fmt(s["p50_ms"], "{:.0f}"),
                fmt(s["p95_ms"], "{:.0f}"),
                fmt(s["p99_ms"], "{:.0f}"),
            ),
        ),
    )


def _meta(run: dict[str, Any]) -> str:
    cfg = run.get("config", {})
    status = run.get("status", "?") + (f" — {run['reason']}" if run.get("reason") else "")
    tags = f" -T {' '.join(cfg['tags'])}" if cfg.get("tags") else ""
    recorded = run.get("profiler") or {}
    if not cfg.get("profile"):
        profiler = "no profiler"
    elif recorded.get("loop") == "sampler":
        loop_hz = recorded.get("loop_rate") or 0
        profiler = f"the loop sampled in the app at {loop_hz:g} Hz, py-spy {recorded.get('rate')} Hz"
        on_demand = recorded.get("on_demand") or {}
        if on_demand and not on_demand.get("started"):
            profiler = f"the loop sampled in the app at {loop_hz:g} Hz; py-spy never needed: no thread but the loop ran"
            recorded = {**recorded, "cpu_percent": recorded.get("cpu_percent") or None}  # children's recorders, if any
        elif on_demand.get("after_s") is not None:
            profiler += f" from when a thread besides the loop ran, {on_demand['after_s']:g} s after the server was up"
    else:
        profiler = f"py-spy {recorded.get('rate') or cfg.get('rate')} Hz"
    spy_cpu = recorded.get("cpu_percent")
    if spy_cpu is not None:
        profiler += f" (py-spy used {spy_cpu:.0f}% of a core)"
    return (
        f"{cfg.get('app')} · {cfg.get('locustfile')}{tags} · {cfg.get('users')} users · {cfg.get('duration')} s"
        f" · {profiler} · status: {status} · {run.get('started_at', '')}"
    )


def run_sections(run: dict[str, Any], report: dict[str, Any]) -> Report:
    """The report of one run: its verdicts, the model of its mix and its what-ifs, then the theory,
    canary and Locust tables."""
    verdicts = tuple((v["level"], v["text"]) for v in report["verdicts"])
    return Report(
        title=run.get("variant") or run.get("config", {}).get("app", "run"),
        meta=_meta(run),
        sections=(
            Verdicts("verdicts", "Verdicts", verdicts),
            _model(report),
            _what_ifs(report),
            _theory(report),
            # only where the analysis has them (a run analysed before they existed has not)
            *(t for t in (_layers(run), _pools(run)) if t.rows),
            _canary(report),
            _stats(run),
        ),
    )


def comparison_table(result: dict[str, Any]) -> Table:
    """The figures of a comparison: one row per run (repeats merged), each against the baseline."""
    base = result["baseline"]
    return Table(
        "figures",
        "Figures",
        ("run", "runs", "req/s", "p95 ms", "canary p95 ms", "loop busy"),
        _rows(
            result["rows"],
            lambda r: (
                r["name"],
                fmt(r["runs"]),
                comparison_cell(r, "rps", base),
                comparison_cell(r, "p95_ms", base),
                comparison_cell(r, "canary_p95_ms", base),
                comparison_cell(r, "loop_busy", base, "{:.0%}"),
            ),
        ),
    )
