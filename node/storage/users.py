"""Users: registration, lookup, prefix search."""

from __future__ import annotations

import asyncpg

from node.domain import User
from node.storage.records import user_from


class UsernameTaken(Exception):
    pass


def _like_prefix(prefix: str) -> str:
    escaped = prefix.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class UserStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(self, username: str, password_hash: str) -> User:
        try:
            row = await self._pool.fetchrow(
                "INSERT INTO users (username, password_hash) VALUES ($1, $2)"
                " RETURNING id, username, created_at",
                username,
                password_hash,
            )
        except asyncpg.UniqueViolationError:
            raise UsernameTaken(username) from None
        assert row is not None
        return user_from(row)

    async def credentials(self, username: str) -> tuple[User, str] | None:
        """The user and their password hash, by case-insensitive username."""
        row = await self._pool.fetchrow(
            "SELECT id, username, created_at, password_hash FROM users"
            " WHERE lower(username) = lower($1)",
            username,
        )
        return (user_from(row), row["password_hash"]) if row else None

    async def get(self, user_id: int) -> User | None:
        row = await self._pool.fetchrow(
            "SELECT id, username, created_at FROM users WHERE id = $1", user_id
        )
        return user_from(row) if row else None

    async def exists(self, user_id: int) -> bool:
        return bool(await self._pool.fetchval("SELECT 1 FROM users WHERE id = $1", user_id))

    async def search(self, prefix: str, limit: int) -> list[User]:
        rows = await self._pool.fetch(
            "SELECT id, username, created_at FROM users"
            " WHERE lower(username) LIKE $1 ORDER BY lower(username) LIMIT $2",
            _like_prefix(prefix),
            limit,
        )
        return [user_from(r) for r in rows]
