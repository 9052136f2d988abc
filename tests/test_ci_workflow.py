"""The CI workflow users copy (docs/ci/github-actions.yml) and the README's plain-shell steps:
the YAML parses, and every loadlab command and flag they use exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import yaml

from loadlab import smoke
from loadlab.cli import main
from tests.helpers import REPO

WORKFLOW = REPO / "docs" / "ci" / "github-actions.yml"


def loadlab_commands(script: str) -> list[list[str]]:
    """Each ``loadlab …`` command line of a shell script, continuation lines joined, split as the
    shell would (up to ``;``, ``|``, ``&&`` or ``#``)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    commands = []
    for line in joined.splitlines():
        for part in re.split(r";|&&|\|\|?", line.split(" #", 1)[0]):
            if part.strip().startswith("loadlab "):
                commands.append(shlex.split(part, comments=True)[1:])
    return commands


def options_of(subcommand: str) -> set[str]:
    if subcommand == "smoke":  # parsed by its own argparse parser
        return {o for action in smoke.parser()._actions for o in action.option_strings}
    command = main.commands[subcommand]
    return {o for p in command.params if isinstance(p, click.Option) for o in p.opts + p.secondary_opts}


def check(commands: list[list[str]]) -> None:
    assert commands, "no loadlab command found"
    for words in commands:
        assert words[0] in main.commands, f"loadlab {words[0]}: no such subcommand"
        known = options_of(words[0])
        for word in words[1:]:
            if word.startswith("--"):
                assert word.split("=", 1)[0] in known, f"loadlab {words[0]} has no flag {word}"


def test_workflow_parses_and_every_loadlab_command_and_flag_exists() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = workflow["jobs"]["smoke"]["steps"]
    scripts = [s["run"] for s in steps if "run" in s]
    commands = [c for script in scripts for c in loadlab_commands(script)]
    check(commands)
    assert {c[0] for c in commands} == {"smoke", "compare"}
    assert any("--fail-on" in c for c in commands) and any("--junit-xml" in c for c in commands)
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert any(s["with"]["name"] == "loadlab-baseline" for s in uploads)
    assert any("GITHUB_STEP_SUMMARY" in script for script in scripts)


def test_readme_plain_shell_steps_use_existing_commands_and_flags() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("#### In your CI", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = loadlab_commands(block)
    check(commands)
    assert {c[0] for c in commands} == {"smoke", "compare"}


def test_the_checker_catches_a_flag_that_does_not_exist() -> None:
    try:
        check(loadlab_commands("loadlab smoke --app a:b --p96-ms 3"))
    except AssertionError as exc:
        assert "--p96-ms" in str(exc)
    else:
        raise AssertionError("an unknown flag passed the check")


def test_workflow_file_is_where_the_readme_says() -> None:
    assert WORKFLOW.is_file() and str(WORKFLOW.relative_to(REPO)) in (REPO / "README.md").read_text()
    assert Path(WORKFLOW).suffix == ".yml"
