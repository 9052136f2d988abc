"""What `pip install loadlab` puts into someone's environment: loadlab, and nothing that could take
the place of a project's own `loadtests` or `target_app` package (the demo is used from a checkout).

Builds the wheel (pip fetches the build backend from the package index, as `pip install` would),
installs it without dependencies into a fresh venv, and imports from a project folder that has
packages of those names; there, a project's own `target_app` is its app, not the demo, and the demo
asked for outside a checkout is refused in one line naming --app. About 10 s in all.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import loadlab.config
from loadlab.cli import main
from tests.helpers import REPO

COPY_IGNORE = (".git", ".venv", "build", "*.egg-info", "profiles", ".data", "__pycache__", ".*_cache")
pytestmark = pytest.mark.timeout(90)  # each test; the wheel's build (its setup) takes ~3 s


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # Built from a copy of the sources: pip builds a local folder in place, and a build/ left by an
    # earlier build would leak into this one.
    source = out / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=75,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (built,) = out.glob("loadlab-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel alone installed (no dependencies): its python."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    return python


def test_the_wheel_holds_loadlab_alone(wheel: Path) -> None:
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {n for n in names if not n.endswith(".dist-info")} == {"loadlab"}
    assert "loadlab/render/flamegraph.js" in zipfile.ZipFile(wheel).namelist()  # package data kept


def test_an_installed_loadlab_leaves_a_projects_own_loadtests_alone(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    for package in ("loadtests", "target_app"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f'MARK = "the project\'s own {package}"\n')
    check = textwrap.dedent(
        """
        import loadlab, loadtests, target_app
        print(loadtests.MARK)
        print(target_app.MARK)
        print(loadlab.__file__)
        """
    )
    # From elsewhere (the project not on the path) neither name is there at all.
    elsewhere = subprocess.run(
        [
            str(installed),
            "-c",
            "import importlib.util as u; print(u.find_spec('loadtests'), u.find_spec('target_app'))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert elsewhere.stdout.strip() == "None None", elsewhere.stdout + elsewhere.stderr
    result = subprocess.run([str(installed), "-c", check], cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    mine, theirs, where = result.stdout.splitlines()
    assert mine == "the project's own loadtests" and theirs == "the project's own target_app"
    assert where.startswith(str(installed.parent.parent))  # loadlab itself came from the installed wheel


# Run by the clean venv's python (loadlab.config needs no third-party package) in the project folder.
CONFIG_CHECK = """
from pathlib import Path
from loadlab.config import ConfigError, ProfileConfig

own = ProfileConfig(app="target_app.main:app", locustfile=Path("loadtests/mine.py")).validated()
print(own.is_demo_app, own.resolved_variants)  # the project's app: no upstream stub, no demo variants
try:
    ProfileConfig().validated()
except ConfigError as exc:
    print(exc)
"""


def test_an_installed_loadlab_profiles_a_projects_own_target_app_not_the_demo(installed: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    for package in ("loadtests", "target_app"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text("")
    (project / "loadtests" / "mine.py").write_text("# the project's own locustfile\n")
    result = subprocess.run(
        [str(installed), "-c", CONFIG_CHECK], cwd=project, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    own, refused = result.stdout.splitlines()
    assert own == "False ()"
    assert refused.startswith("--app: the demo app (target_app) is only in a checkout of loadlab")


def test_the_demo_outside_a_checkout_is_one_line_naming_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As an installed loadlab sees it: no checkout next to the package nor in the current folder."""
    monkeypatch.setattr(loadlab.config, "checkout_root", lambda: None)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["profile"])
    assert result.exit_code == 2
    (error,) = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert "--app MODULE:ATTR and --locustfile" in error and "target_app" in error
