"""The same verdicts and tables in Markdown, for CI logs (``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

from typing import Any

from loadlab.render._format import comparison_cell

ICON = {"problem": "❌", "warning": "⚠️", "ok": "✅"}


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return "-" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def run_report(run: dict[str, Any], report: dict[str, Any]) -> str:
    title = run.get("variant") or run.get("config", {}).get("app", "run")
    out = [
        f"# loadlab report: {title}",
        "",
        f"status: {run.get('status')}" + (f" — {run['reason']}" if run.get("reason") else ""),
        "",
    ]
    out += ["## Verdicts", ""] + [f"- {ICON[v['level']]} {v['text']}" for v in report["verdicts"]] + [""]
    out += ["## Theory vs measured", ""]
    out.append(
        _table(
            [
                "endpoint",
                "model",
                "service ms",
                "users",
                "predicted req/s",
                "measured req/s",
                "measured/predicted",
                "limited by",
            ],
            [
                [
                    r["endpoint"],
                    r["model"],
                    r["service_ms"],
                    r["users"],
                    r["predicted_rps"],
                    r["measured_rps"],
                    f"{r['ratio']:.0%}" if r["ratio"] is not None else None,
                    r["limited_by"],
                ]
                for r in report["theory"]
            ],
        )
    )
    canary = report.get("canary")
    if canary:
        out += ["", "## Collateral damage (canary)", ""]
        out.append(
            _table(
                ["endpoint", "idle p50 ms", "load p50 ms", "load p99 ms", "p50 factor"],
                [
                    [
                        canary["endpoint"],
                        canary["idle_p50_ms"],
                        canary["load_p50_ms"],
                        canary["load_p99_ms"],
                        f"{canary['p50_factor']:g}×",
                    ]
                ],
            )
        )
    out += ["", "## Endpoints (Locust)", ""]
    out.append(
        _table(
            ["name", "requests", "failures", "req/s", "p50 ms", "p95 ms", "p99 ms"],
            [
                [s["name"], s["requests"], s["failures"], s["rps"], s["p50_ms"], s["p95_ms"], s["p99_ms"]]
                for s in run.get("stats", [])
            ],
        )
    )
    return "\n".join(out) + "\n"


def comparison(result: dict[str, Any]) -> str:
    out = [
        "# loadlab comparison",
        "",
        f"Each run against the first ({result['baseline']}); n.s. = inside the noise.",
        "",
    ]
    out += [f"- {r['sentence']}" for r in result["rows"]] + [""]
    if result.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in result["notes"]] + [""]

    def cell(r: dict[str, Any], key: str, spec: str = "{:.0f}") -> str:
        return comparison_cell(r, key, result["baseline"], spec)

    out.append(
        _table(
            ["run", "runs", "req/s", "p95 ms", "canary p95 ms", "loop busy"],
            [
                [
                    r["name"],
                    r["runs"],
                    cell(r, "rps"),
                    cell(r, "p95_ms"),
                    cell(r, "canary_p95_ms"),
                    cell(r, "loop_busy", "{:.0%}"),
                ]
                for r in result["rows"]
            ],
        )
    )
    return "\n".join(out) + "\n"
