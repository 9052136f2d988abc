"""Formatting shared by the HTML and Markdown renderers."""

from __future__ import annotations

from typing import Any

from loadlab.analysis.compare import times


def comparison_cell(row: dict[str, Any], key: str, baseline: str, spec: str = "{:.0f}") -> str:
    """A comparison figure: median (and range over repeats), with its ratio to the baseline."""
    v = row.get(key)
    if v is None:
        return "-"
    text = spec.format(v["median"])
    if row["runs"] > 1:
        text += f" ({spec.format(v['low'])}–{spec.format(v['high'])})"
    ratio = row.get(f"{key}_ratio")
    if ratio is not None and row["name"] != baseline:
        text += f" · {times(ratio)}×" + ("" if row.get(f"{key}_significant") else " (n.s.)")
    return text
