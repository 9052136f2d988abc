"""The benchmark's Markdown table, rendered from its stored JSON (so it can be re-rendered)."""

from __future__ import annotations

from typing import Any


def _met(value: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "—"}[value]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(result: dict[str, Any]) -> str:
    """A Markdown table (item, goal, measured, median (min–max), met/missed, note) with its context."""
    pin = result["pinning"]
    lines = [
        f"## `make bench` — {result['timestamp']}",
        "",
        f"Command: `{result['command']}`; {result['settings']['repeats']} repeats, "
        f"{result['settings']['duration_s']:g} s of load per measurement, paired and interleaved; "
        f"median (min–max). Pinning: {pin['how']}. {result['machine']['cores']} cores, "
        f"{result['machine']['cpu_model']}; load average at start {result['load']['loadavg_1m_at_start']}; "
        f"wall time {result['wall_s'] / 60:.1f} min. {result['hygiene_text']}",
        "",
        "| item | goal | measured | median (min–max) | met? | note |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [row["item"], row["goal"], row["measured"], row["figure"], _met(row["met"]), row["note"]]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    missed = [r["item"] for r in result["rows"] if r["met"] is False]
    lines += ["", f"Missed: {', '.join(missed)}." if missed else "Every goal was met.", ""]
    return "\n".join(lines)
