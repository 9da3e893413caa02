"""Ordered SQL migrations, applied exactly once however many nodes start together.

Each `migrations/NNNN_name.sql` file runs in its own transaction and is recorded in
`schema_migrations`. The whole run holds a PostgreSQL advisory lock, so a second node starting at
the same moment waits, then finds every file recorded and applies nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

# Inside the package, so that an installed wheel can migrate: `node/migrations` is a link to the
# repository's `migrations/` (the files live there; the wheel carries copies).
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
_LOCK_KEY = 0x6D65_7373_656E  # "messen": any constant shared by every node


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in the order they apply (by their numeric prefix)."""
    return sorted(p for p in directory.glob("*.sql") if p.name[:4].isdigit())


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded; returns the names applied by this call."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for path in migration_files(directory):
                if path.stem in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1)", path.stem
                    )
                applied.append(path.stem)
                log.info("migration.applied", extra={"version": path.stem})
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
    return applied
