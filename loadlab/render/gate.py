"""A smoke's verdict for people and CI: the terminal, ``smoke.md`` (for ``$GITHUB_STEP_SUMMARY``)
and JUnit XML (one test case per budget, which GitHub, GitLab and Jenkins display)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loadlab.analysis.culprits import Culprit
from loadlab.analysis.regress import blocker_text
from loadlab.budgets import Check
from loadlab.budgets import format_value as _fmt
from loadlab.gates import SmokeOutcome, StepOutcome

MAX_CULPRITS = 5


def status(code: int) -> str:
    return {0: "passed", 1: "FAILED", 3: "INVALID (the load generator was saturated)"}.get(code, f"ERROR (exit {code})")


def failure_message(check: Check, step: StepOutcome) -> str:
    """``event-loop lag p99: measured 93.0 ms, budget 25.0 ms; culprit slow_items (app.py:14, wait)``."""
    text = f"{check.name}: measured {_fmt(check.measured, check.unit)}, budget {_fmt(check.budget, check.unit)}"
    c = step.culprit
    if c is not None:
        text += f"; culprit {c.function} ({c.where}, {c.kind}, {c.source})"
    return text


def _culprit_lines(culprits: tuple[Culprit, ...]) -> list[str]:
    return [c.text() for c in culprits[:MAX_CULPRITS]]


def terminal(outcome: SmokeOutcome) -> str:
    """The table of budgets of each step, what set each, and what blocked the loop."""
    lines = []
    for step in outcome.steps:
        lines.append(f"smoke {step.name}: {status(step.exit_code)}")
        if step.error:
            lines.append(f"  error: {step.error}")
        if step.verdict is not None:
            checks = step.verdict.checks
            width = max([len(c.name) for c in checks] + [6])
            lines.append(f"  {'budget':<{width}}  {'limit':>10}  {'measured':>10}  result  set by")
            for c in checks:
                result = "pass" if c.passed else "FAIL"
                source = outcome.budgets.source_of_check(c.name)
                lines.append(
                    f"  {c.name:<{width}}  {_fmt(c.budget, c.unit):>10}  {_fmt(c.measured, c.unit):>10}  "
                    f"{result:<6}  {source}"
                )
            for c in step.verdict.broken:
                measured, budget = _fmt(c.measured, c.unit), _fmt(c.budget, c.unit)
                lines.append(f"  broken budget: {c.name}: measured {measured}, budget {budget}")
        if step.culprits:
            lines.append("  what blocked the event loop:")
            lines += [f"    {t}" for t in _culprit_lines(step.culprits)]
            if step.exit_code != 0 and step.culprit is not None and step.culprit.advice:
                lines.append(f"  advice: {step.culprit.function} is {step.culprit.advice}")
        elif step.exit_code != 0:
            lines.append("  what blocked the event loop: nothing the app recorded (no stall, no sampled function)")
    lines += [f"note: {n}" for n in outcome.notes]
    return "\n".join(lines)


def markdown(outcome: SmokeOutcome, run_dir: Path) -> str:
    """``smoke.md``: the verdict first, then each step's budgets and culprits."""
    head = "✅ passed" if outcome.passed else f"❌ {status(outcome.exit_code)}"
    out = [f"## loadlab smoke: {head}", "", f"`{outcome.title}` — {outcome.seconds:g} s; outputs in `{run_dir}`", ""]
    for step in outcome.steps:
        out += [f"### {step.name}: {status(step.exit_code)}", ""]
        if step.error:
            out += [f"error: {step.error}", ""]
        if step.verdict is not None:
            out += ["| budget | limit | measured | result | set by |", "|---|---:|---:|---|---|"]
            for c in step.verdict.checks:
                result = "pass" if c.passed else "**FAIL**"
                source = outcome.budgets.source_of_check(c.name)
                out.append(
                    f"| {c.name} | {_fmt(c.budget, c.unit)} | {_fmt(c.measured, c.unit)} | {result} | {source} |"
                )
            out.append("")
        if step.culprits:
            out += ["**What blocked the event loop**", ""]
            out += [f"- `{c.function}` in `{c.where}`" + c.text().split(c.where, 1)[1] for c in step.culprits[:5]]
            if step.exit_code != 0 and step.culprit is not None and step.culprit.advice:
                out += ["", f"**Advice:** `{step.culprit.function}` is {step.culprit.advice}"]
            out.append("")
    out += [f"- note: {n}" for n in outcome.notes]
    if outcome.gate is not None:
        from loadlab.render.regress import markdown as gate_markdown

        out += ["", gate_markdown(dict(outcome.gate))]
    return "\n".join(out).rstrip() + "\n"


def junit_xml(outcome: SmokeOutcome) -> str:
    """JUnit XML: a ``testsuite`` per step, a ``testcase`` per budget; a broken budget is a
    ``failure`` whose message carries the measured value, the budget and the culprit; an invalid
    run's generator check, or a step without a verdict, is an ``error``."""
    root = ET.Element("testsuites", name="loadlab smoke", time=f"{outcome.seconds:.1f}")
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for step in outcome.steps:
        suite = ET.SubElement(root, "testsuite", name=f"loadlab smoke {step.name}")
        props = ET.SubElement(suite, "properties")
        for key, source in outcome.budgets.sources.items():
            ET.SubElement(props, "property", name=f"budget {key}", value=f"{outcome.budgets.values[key]} ({source})")
        counts = {"tests": 0, "failures": 0, "errors": 0}
        checks = step.verdict.checks if step.verdict else ()
        if not checks:
            case = ET.SubElement(suite, "testcase", name="smoke run", classname=f"loadlab.smoke.{step.name}", time="0")
            ET.SubElement(case, "error", message=step.error or "no verdict was written", type="SmokeError")
            counts["tests"] += 1
            counts["errors"] += 1
        for c in checks:
            case = ET.SubElement(suite, "testcase", name=c.name, classname=f"loadlab.smoke.{step.name}", time="0")
            counts["tests"] += 1
            if c.passed:
                continue
            message = failure_message(c, step)
            invalid = c.name == "load generator CPU" or c.name == "requests made"
            element = ET.SubElement(
                case,
                "error" if invalid else "failure",
                message=message,
                type="InvalidRun" if invalid else "BudgetBroken",
            )
            detail = [message, *_culprit_lines(step.culprits)]
            if step.culprit is not None and step.culprit.advice:
                detail.append(f"advice: {step.culprit.function} is {step.culprit.advice}")
            element.text = "\n".join(detail)
            counts["errors" if invalid else "failures"] += 1
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
        suite.set("skipped", "0")
    if outcome.gate is not None:
        _gate_suite(root, outcome.gate, totals)
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _gate_suite(root: ET.Element, gate: Mapping[str, Any], totals: dict[str, int]) -> None:
    """The baseline gate as a test suite: a test case per rule, a failure for a regression that
    names the blockers that appeared or grew."""
    suite = ET.SubElement(root, "testsuite", name="loadlab baseline gate")
    worse = [blocker_text(b) for b in gate["blockers"] if b["status"] in ("appeared", "grew")]
    failures = 0
    for row in gate["rules"]:
        case = ET.SubElement(suite, "testcase", name=row["rule"], classname="loadlab.baseline", time="0")
        if row["regression"]:
            failures += 1
            message = "; ".join([row["text"], *worse[:2]])
            ET.SubElement(case, "failure", message=message, type="Regression").text = "\n".join(
                [row["text"], gate["method"], *worse]
            )
    suite.set("tests", str(len(gate["rules"])))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", "0")
    totals["tests"] += len(gate["rules"])
    totals["failures"] += failures
