"""Is a run's measurement worth reading? Every signal the harness has, judged before any figure.

A load test whose requests all failed measured an error page, not the app; one that made no
request measured nothing. Those runs are ``failed``. A run that measured something but with a
caveat large enough to change its figures — failures above the budget, the locustfile's own code
raising, py-spy falling behind or writing no profile — is ``doubtful``. Otherwise ``ok``. The
report, the summary table and the exit code of ``loadlab profile`` put this first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from loadlab.results import aggregated_row, endpoint_rows

DEFAULT_FAIL_RATIO = 0.01
STATUS_OF = {"ok": "complete", "doubtful": "doubtful", "failed": "failed"}
# py-spy's own warning when it cannot keep up with the sampling rate (it prints it to stderr,
# which goes to server.log): "1.23s behind in sampling, results may be inaccurate. …"
_BEHIND = re.compile(r"([\d.]+)\s*(ms|s)\s+behind in sampling")


def pyspy_warnings(server_log: Path) -> list[str]:
    """py-spy's "behind in sampling" warnings from the server's log, as it printed them."""
    try:
        lines = server_log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines if _BEHIND.search(line)]


def _worst_lag_s(warnings: list[str]) -> float:
    worst = 0.0
    for line in warnings:
        m = _BEHIND.search(line)
        if m:
            worst = max(worst, float(m.group(1)) / (1000 if m.group(2) == "ms" else 1))
    return worst


# Locust's text for an HTTP error status: HTTPError('500 Server Error: Internal Server Error for url: /x')
_HTTP_ERROR = re.compile(r"^HTTPError\('(\d{3} [^']*?) for url: [^']*'\)$")


def _most_common_failure(run: dict[str, Any]) -> str:
    failures = run.get("locust_failures") or []
    if not failures:
        return ""
    top = failures[0]
    error = str(top["error"])
    m = _HTTP_ERROR.match(error)
    recorded = sum(f["occurrences"] for f in failures)
    share = f", {top['occurrences'] / recorded:.0%} of those recorded" if len(failures) > 1 else ""
    return f"; most common: {m.group(1) if m else error} on {top['method']} {top['name']}{share}"


def _no_request_reason(run: dict[str, Any]) -> str:
    exceptions = run.get("locust_exceptions") or []
    said = f': Locust said "{exceptions[0]["message"].strip()}"' if exceptions else ""
    tags = (run.get("config") or {}).get("tags") or []
    if tags:
        return f"{said} — does a task of the locustfile carry the tag {' or '.join(tags)}?"
    return said or " (see locust.log)"


def _load_counts(run: dict[str, Any]) -> tuple[int, int, bool]:
    """Requests and failures of the endpoints under load — the canary's, which keep coming when
    every other task fails or was never selected, aside — and whether only the canary ran.

    A locustfile whose one endpoint is ``/health`` loads it on purpose: then it is the endpoint.
    """
    rows = endpoint_rows(run)
    if rows:
        return sum(int(r["requests"]) for r in rows), sum(int(r["failures"]) for r in rows), False
    total = aggregated_row(run)
    if total and total["requests"] and run.get("locust_exceptions"):
        return 0, 0, True  # the canary alone ran: the locustfile's own users never started
    return (int(total["requests"]), int(total["failures"]), False) if total else (0, 0, False)


def assess(run: dict[str, Any]) -> dict[str, Any]:
    """``{"verdict": "ok" | "doubtful" | "failed", "problems": [{"level", "text"}]}``, the worst
    problem first. Reads only what the run recorded."""
    problems: list[dict[str, str]] = []
    config = run.get("config") or {}
    budget = float(config.get("fail_ratio", DEFAULT_FAIL_RATIO))
    requests, failed, canary_only = _load_counts(run)
    if requests == 0:
        besides = " besides the canary's" if canary_only else ""
        why = _no_request_reason(run)
        text = f"No request was made{besides}{why}" + ("" if why.endswith("?") else ".")
        problems.append({"level": "failed", "text": text})
    elif failed >= requests:
        problems.append(
            {
                "level": "failed",
                "text": f"All {requests:,} requests failed: the figures describe an error, not the app"
                f"{_most_common_failure(run)}.",
            }
        )
    elif failed / requests > budget:
        problems.append(
            {
                "level": "doubtful",
                "text": f"{failed:,} of {requests:,} requests failed ({failed / requests:.1%}, above the "
                f"--fail-ratio budget of {budget:.0%}){_most_common_failure(run)}.",
            }
        )
    exceptions = run.get("locust_exceptions") or []
    if exceptions and requests:
        count = sum(e["count"] for e in exceptions)
        problems.append(
            {
                "level": "doubtful",
                "text": f"The locustfile's own code raised {count:,} times ({exceptions[0]['message']}): "
                "some users did not run as written.",
            }
        )
    thresholds = run.get("thresholds") or {}
    if requests and thresholds.get("valid") is False:
        cpu = next((c for c in thresholds.get("checks", []) if c.get("name") == "load generator CPU"), None)
        figure = (
            f" (Locust at {cpu['measured']:.0f}% CPU)" if cpu and isinstance(cpu.get("measured"), int | float) else ""
        )
        problems.append(
            {
                "level": "doubtful",
                "text": f"The load generator was overloaded{figure}: the figures measure Locust as much as the "
                "app; run Locust with more processes (--locust-processes) or on cores of its own.",
            }
        )
    workers = run.get("locust_workers") or {}
    if workers.get("missing"):
        problems.append(
            {
                "level": "failed",
                "text": f"A Locust worker went missing during the run ({workers['missing'][0]}): the load was not "
                "what was asked, and the figures mix two loads.",
            }
        )
    warnings = run.get("profiler_warnings") or []
    if warnings:
        problems.append(
            {
                "level": "doubtful",
                "text": f"py-spy fell behind in sampling {len(warnings)} times (up to {_worst_lag_s(warnings):.1f} s): "
                "the profile misses those moments; lower --rate.",
            }
        )
    loop_note = (run.get("profiler") or {}).get("loop_note")
    if loop_note:
        problems.append(
            {
                "level": "doubtful",
                "text": f"The loop's profile is not exact: {loop_note}, which misses much of what a busy "
                "loop does. Pass --native for py-spy's exact, pausing recording.",
            }
        )
    if config.get("profile") and not config.get("target_host") and run.get("profile_error"):
        problems.append({"level": "doubtful", "text": f"No profile: {run['profile_error']}."})
    order = {"failed": 0, "doubtful": 1}
    problems.sort(key=lambda p: order[p["level"]])
    verdict = problems[0]["level"] if problems else "ok"
    return {"verdict": verdict, "problems": problems}
