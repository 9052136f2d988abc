"""What `pip install loadlab` puts into someone's environment: loadlab, and nothing that could take
the place of a project's own `loadtests` or `target_app` package (the demo is used from a checkout).

Builds the wheel (pip fetches the build backend from the package index, as `pip install` would),
installs it without dependencies into a fresh venv, and imports from a project folder that has
packages of those names.
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

from tests.helpers import REPO

COPY_IGNORE = (".git", ".venv", "build", "*.egg-info", "profiles", ".data", "__pycache__", ".*_cache")


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
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (built,) = out.glob("loadlab-*.whl")
    return built


def test_the_wheel_holds_loadlab_alone(wheel: Path) -> None:
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {n for n in names if not n.endswith(".dist-info")} == {"loadlab"}
    assert "loadlab/render/flamegraph.js" in zipfile.ZipFile(wheel).namelist()  # package data kept


def test_an_installed_loadlab_leaves_a_projects_own_loadtests_alone(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert install.returncode == 0, install.stderr[-2000:]
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
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('loadtests'), u.find_spec('target_app'))"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert elsewhere.stdout.strip() == "None None", elsewhere.stdout + elsewhere.stderr
    result = subprocess.run([str(python), "-c", check], cwd=project, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    mine, theirs, where = result.stdout.splitlines()
    assert mine == "the project's own loadtests" and theirs == "the project's own target_app"
    assert where.startswith(str(env_dir))  # loadlab itself came from the installed wheel
