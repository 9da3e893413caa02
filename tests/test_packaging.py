"""The project as users install it: a wheel that carries its migrations and typing marker, and
that migrates from its installed location (not from a source checkout)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    [built] = out.glob("messenger_node-*.whl")
    return built


def test_the_wheel_carries_every_migration_and_the_typing_marker(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    sql = {f"node/migrations/{p.name}" for p in (REPO / "migrations").glob("*.sql")}
    assert sql and sql <= names
    assert "node/py.typed" in names
    assert not any(n.startswith(("tests/", "migrations/")) for n in names)


async def test_an_installed_wheel_migrates(
    wheel: Path, tmp_path: Path, database_factory: Callable[..., Any]
) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target)]
    await asyncio.to_thread(subprocess.run, [*pip, str(wheel)], check=True, capture_output=True)
    url = await database_factory(migrated=False)
    script = (
        "import asyncio, node.storage.migrate as m; "
        f"assert m.__file__.startswith({str(target)!r}), m.__file__; "
        f"print(','.join(asyncio.run(m.apply_migrations({url!r}))))"
    )
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    applied = done.stdout.strip().split(",")
    assert applied == sorted(p.stem for p in (REPO / "migrations").glob("*.sql"))
