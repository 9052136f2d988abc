"""The same verdicts and tables in Markdown, for CI logs (``$GITHUB_STEP_SUMMARY``).

The tables come from :mod:`loadlab.render.sections`; this module only lays them out.
"""

from __future__ import annotations

from typing import Any

from loadlab.render.sections import Section, Table, comparison_table, run_sections

ICON = {"problem": "❌", "warning": "⚠️", "ok": "✅"}


def table(t: Table) -> str:
    """The table's rows (or its ``empty`` sentence), without its title."""
    if not t.rows and t.empty:
        return t.empty
    lines = ["| " + " | ".join(t.headers) + " |", "|" + "---|" * len(t.headers)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in t.rows]
    return "\n".join(lines)


def section(s: Section) -> list[str]:
    """A section with its ``##`` heading, as lines ending in a blank one."""
    if isinstance(s, Table):
        body = ([s.note, ""] if s.note else []) + [table(s)]
    else:
        body = [f"- {ICON[level]} {text}" for level, text in s.items]
    return [f"## {s.title}", "", *body, ""]


def run_report(run: dict[str, Any], report: dict[str, Any]) -> str:
    r = run_sections(run, report)
    out = [f"# loadlab report: {r.title}", "", r.meta, ""]
    for s in r.sections:
        out += section(s)
    return "\n".join(out)


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
    out += section(comparison_table(result))
    return "\n".join(out)
