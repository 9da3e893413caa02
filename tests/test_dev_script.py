"""`./dev` on a fresh checkout: it installs with the pip its new venv brings, at the versions
constraints.txt pins, says in one line that it installs, keeps pip's output to itself unless the
install fails, and then shows all of it. Run on a tiny stand-in project."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

pytestmark = pytest.mark.process

PYPROJECT = """\
[build-system]
requires = ["setuptools>=69", "wheel"]
build-backend = "setuptools.build_meta"

[project]
name = "messenger-node"
version = "0.0.0"
dependencies = ["six", {dependency}]

[project.optional-dependencies]
embedded = []

[tool.setuptools.packages.find]
include = ["node*"]
"""


def checkout(root: Path, dependency: str = "") -> Path:
    root.mkdir()
    shutil.copy(REPO / "dev", root / "dev")
    (root / "constraints.txt").write_text("six==1.16.0\n")  # the lock: the pin wins
    (root / "pyproject.toml").write_text(PYPROJECT.format(dependency=dependency))
    (root / "node").mkdir()
    (root / "node" / "__init__.py").write_text("")
    (root / "node" / "__main__.py").write_text("import sys\nprint('node', *sys.argv[1:])\n")
    return root


def run_dev(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["./dev", *args], cwd=root, capture_output=True, text=True, timeout=300, check=False
    )


def test_first_run_is_quiet_and_keeps_the_venvs_own_pip(tmp_path: Path) -> None:
    root = checkout(tmp_path / "fresh")
    done = run_dev(root, "serve", "--flag")
    assert done.returncode == 0, done
    assert done.stdout == "node serve --flag\n"
    assert done.stderr.splitlines() == [
        "dev: installing messenger-node[embedded] into .venv (log: .venv/pip.log)"
    ]
    again = run_dev(root, "serve")  # installed: nothing is said
    assert (again.returncode, again.stdout, again.stderr) == (0, "node serve\n", "")
    pip = subprocess.run(
        [str(root / ".venv" / "bin" / "python"), "-m", "ensurepip", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    version = subprocess.run(
        [str(root / ".venv" / "bin" / "python"), "-m", "pip", "--version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert version == pip, "dev upgraded pip"
    six = subprocess.run(
        [str(root / ".venv" / "bin" / "python"), "-c", "import six; print(six.__version__)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert six == "1.16.0"  # the locked version, not the newest


def test_a_failed_install_shows_pips_log(tmp_path: Path) -> None:
    root = checkout(tmp_path / "broken", dependency='"no-such-package @ file:///nonexistent/x"')
    done = run_dev(root, "serve")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "/nonexistent/x" in done.stderr, done.stderr
    assert done.stderr.rstrip().endswith(
        "dev: pip install failed (log above, also in .venv/pip.log)"
    )
