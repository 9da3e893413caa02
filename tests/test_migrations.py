"""Migrations: ordered, each applied exactly once, even when several nodes start together."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from node.storage import apply_migrations
from node.storage.migrate import MIGRATIONS_DIR, migration_files


@pytest.fixture
def empty_database(database_factory: Callable[..., Awaitable[str]]) -> Callable[[], Awaitable[str]]:
    """Make empty (unmigrated) databases; all dropped after the test."""
    return lambda: database_factory(migrated=False)


async def recorded(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        return [r["version"] for r in rows]
    finally:
        await conn.close()


def shipped() -> list[str]:
    return [p.stem for p in migration_files()]


def test_the_shipped_migrations_are_found() -> None:
    names = shipped()
    assert names and names[0] == "0001_init"
    assert all((MIGRATIONS_DIR / f"{n}.sql").is_file() for n in names)


def test_files_apply_in_numeric_order(tmp_path: Path) -> None:
    for name in ("0010_c.sql", "0002_b.sql", "0001_a.sql", "notes.sql", "0003_x.txt"):
        (tmp_path / name).write_text("SELECT 1;")
    assert [p.name for p in migration_files(tmp_path)] == ["0001_a.sql", "0002_b.sql", "0010_c.sql"]


async def test_applying_twice_applies_nothing_the_second_time(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    url = await empty_database()
    assert await apply_migrations(url) == shipped()
    assert await apply_migrations(url) == []
    assert await recorded(url) == shipped()


async def test_a_migrated_clone_has_nothing_pending(database_url: str) -> None:
    assert await apply_migrations(database_url) == []


async def test_concurrent_starts_apply_each_file_exactly_once(
    empty_database: Callable[[], Awaitable[str]],
) -> None:
    url = await empty_database()
    async with asyncio.timeout(60):
        results = await asyncio.gather(*(apply_migrations(url) for _ in range(5)))
    applied = [name for result in results for name in result]
    assert sorted(applied) == shipped()  # all of them, by exactly one of the five
    assert sum(1 for result in results if result) == 1
    assert await recorded(url) == shipped()
    conn = await asyncpg.connect(url)
    try:  # the schema is really there, once
        functions = "SELECT count(*) FROM pg_proc WHERE proname = 'post_messages'"
        assert await conn.fetchval(functions) == 1
    finally:
        await conn.close()


async def test_a_failing_migration_is_rolled_back_and_not_recorded(
    empty_database: Callable[[], Awaitable[str]], tmp_path: Path
) -> None:
    url = await empty_database()
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT no_such_column;")
    with pytest.raises(asyncpg.PostgresError):
        await apply_migrations(url, tmp_path)
    assert await recorded(url) == ["0001_ok"]
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT to_regclass('good')") is not None
        # a fixed file applies on the next start
        (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int);")
        assert await apply_migrations(url, tmp_path) == ["0002_bad"]
    finally:
        await conn.close()
