"""Refresh tokens: stored as digests, grouped in families, spent once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(slots=True, frozen=True)
class SpentToken:
    user_id: int
    family_id: uuid.UUID


class RefreshTokenStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def issue(
        self, user_id: int, family_id: uuid.UUID, token_hash: bytes, expires_at: datetime
    ) -> None:
        await self._pool.execute(
            "INSERT INTO refresh_tokens (family_id, user_id, token_hash, expires_at)"
            " VALUES ($1, $2, $3, $4)",
            family_id,
            user_id,
            token_hash,
            expires_at,
        )

    async def spend(self, token_hash: bytes) -> SpentToken | None:
        """Mark a live token spent and return whose it was. None when it is unknown, expired,
        revoked or already spent; in the last case the whole family is revoked (reuse means the
        token leaked)."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE refresh_tokens SET spent_at = now()"
                " WHERE token_hash = $1 AND spent_at IS NULL AND revoked_at IS NULL"
                "   AND expires_at > now()"
                " RETURNING user_id, family_id",
                token_hash,
            )
            if row is not None:
                return SpentToken(user_id=row["user_id"], family_id=row["family_id"])
            await conn.execute(
                "UPDATE refresh_tokens SET revoked_at = now()"
                " WHERE revoked_at IS NULL AND family_id = ("
                "   SELECT family_id FROM refresh_tokens"
                "   WHERE token_hash = $1 AND spent_at IS NOT NULL)",
                token_hash,
            )
            return None

    async def revoke_family_of(self, token_hash: bytes, user_id: int) -> bool:
        """Revoke the family the token belongs to, if it is the user's. True if one was."""
        result = await self._pool.execute(
            "UPDATE refresh_tokens SET revoked_at = now()"
            " WHERE revoked_at IS NULL AND family_id = ("
            "   SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2)",
            token_hash,
            user_id,
        )
        return bool(result != "UPDATE 0")
