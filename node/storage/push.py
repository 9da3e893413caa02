"""Web Push subscriptions, and what a push says about a message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg


@dataclass(slots=True, frozen=True)
class PushSubscription:
    id: int
    user_id: int
    endpoint: str
    p256dh: str
    auth: str


@dataclass(slots=True, frozen=True)
class PushedMessage:
    """What a push names: the message's chat and sender, and its text."""

    message_id: int
    chat_id: int
    chat_kind: str
    chat_title: str | None
    seq: int
    sender_id: int
    sender_username: str
    text: str


_COLUMNS = "id, user_id, endpoint, p256dh, auth"


class PushStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, user_id: int, endpoint: str, p256dh: str, auth: str, *, keep: int) -> int:
        """Store a subscription for the user and return its id. An endpoint already stored moves
        to this user with these keys (same id). Past `keep` subscriptions the user's oldest go:
        browsers replace subscriptions without telling, and a user must not make the node send
        without bound."""
        async with self._pool.acquire() as conn, conn.transaction():
            sub_id = await conn.fetchval(
                "INSERT INTO push_subscriptions AS s (user_id, endpoint, p256dh, auth)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (endpoint) DO UPDATE"
                " SET user_id = excluded.user_id, p256dh = excluded.p256dh, auth = excluded.auth"
                " RETURNING id",
                user_id,
                endpoint,
                p256dh,
                auth,
            )
            await conn.execute(
                "DELETE FROM push_subscriptions WHERE user_id = $1 AND id NOT IN"
                " (SELECT id FROM push_subscriptions WHERE user_id = $1 ORDER BY id DESC LIMIT $2)",
                user_id,
                keep,
            )
        return int(sub_id)

    async def remove(self, user_id: int, sub_id: int) -> bool:
        """Delete the user's subscription; False when the user has none with that id."""
        status = await self._pool.execute(
            "DELETE FROM push_subscriptions WHERE id = $1 AND user_id = $2", sub_id, user_id
        )
        return bool(status == "DELETE 1")

    async def discard(self, sub_id: int) -> None:
        """Delete a subscription its push service called gone (whoever it belongs to now)."""
        await self._pool.execute("DELETE FROM push_subscriptions WHERE id = $1", sub_id)

    async def for_user(self, user_id: int) -> list[PushSubscription]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM push_subscriptions WHERE user_id = $1 ORDER BY id", user_id
        )
        return [PushSubscription(**dict(row)) for row in rows]

    async def has_any(self, user_id: int) -> bool:
        return bool(
            await self._pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM push_subscriptions WHERE user_id = $1)", user_id
            )
        )

    async def subscribed_users(self, page: int = 5000) -> AsyncIterator[list[int]]:
        """Every user with a subscription, a page of ids at a time (keyset pagination)."""
        after = 0
        while True:
            rows = await self._pool.fetch(
                "SELECT DISTINCT user_id FROM push_subscriptions WHERE user_id > $1"
                " ORDER BY user_id LIMIT $2",
                after,
                page,
            )
            if not rows:
                return
            ids = [int(r["user_id"]) for r in rows]
            yield ids
            after = ids[-1]

    async def message(self, message_id: int) -> PushedMessage | None:
        row = await self._pool.fetchrow(
            "SELECT m.id AS message_id, m.chat_id, c.kind AS chat_kind, c.title AS chat_title,"
            " m.seq, m.sender_id, u.username AS sender_username, m.text"
            " FROM messages m JOIN chats c ON c.id = m.chat_id JOIN users u ON u.id = m.sender_id"
            " WHERE m.id = $1",
            message_id,
        )
        return PushedMessage(**dict(row)) if row else None
