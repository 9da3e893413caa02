"""Messages: the chat actor's group commit, history pages and delivery backlogs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from node.domain import ChatPosition, Message, PostResult
from node.storage.records import MESSAGE_COLUMNS, message_from


class ChatMissing(Exception):
    """The chat of a batch does not exist (any more)."""


class Fenced(Exception):
    """The writer's epoch is no longer the chat's: another node owns the chat now."""


@dataclass(slots=True, frozen=True)
class NewMessage:
    sender_id: int
    client_msg_id: str
    text: str
    attachments: tuple[dict[str, Any], ...] = ()


_RETRIES_ON_RACE = 3


class MessageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def post_batch(
        self, chat_id: int, epoch: int, batch: Sequence[NewMessage]
    ) -> list[PostResult]:
        """Store a batch in one transaction; one result per input, in order.

        Seqs are assigned gap-free to the created rows only. The caller passes distinct
        (sender, client_msg_id) pairs. When another chat stores the same pair concurrently the
        unique index refuses this transaction; it is retried and then reports a conflict.
        """
        args = (
            chat_id,
            epoch,
            [m.sender_id for m in batch],
            [m.client_msg_id for m in batch],
            [m.text for m in batch],
            [orjson.dumps(m.attachments).decode() for m in batch],
        )
        rows = await self._call("store_messages", args)  # the fast path: all new, all members
        if rows is None:
            rows = await self._call("post_messages", args)
            assert rows is not None
        return [
            PostResult(
                status=r["status"],
                message=message_from(r) if r["id"] is not None else None,
                members_version=r["members_version"],
            )
            for r in sorted(rows, key=lambda r: r["idx"])
        ]

    async def _call(self, function: str, args: tuple[Any, ...]) -> list[asyncpg.Record] | None:
        """Run one of the group-commit functions; None when the fast path declined (MR001)."""
        for attempt in range(_RETRIES_ON_RACE):
            try:
                return await self._pool.fetch(f"SELECT * FROM {function}($1, $2, $3, $4, $5, $6)", *args)
            except asyncpg.UniqueViolationError:
                if attempt == _RETRIES_ON_RACE - 1:
                    raise
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == "MR001":
                    return None
                if exc.sqlstate == "MF001":
                    raise Fenced(str(exc)) from None
                if exc.sqlstate == "MN001":
                    raise ChatMissing(args[0]) from None
                raise
        raise AssertionError("unreachable")

    async def page(
        self, chat_id: int, *, after_seq: int | None, before_seq: int | None, limit: int
    ) -> list[Message]:
        """History ascending by seq. With `after_seq`: the first `limit` above it (and below
        `before_seq` if given); otherwise the newest `limit` below `before_seq` (or overall)."""
        if after_seq is not None:
            rows = await self._pool.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1 AND seq > $2"
                " AND ($3::bigint IS NULL OR seq < $3) ORDER BY seq LIMIT $4",
                chat_id,
                after_seq,
                before_seq,
                limit,
            )
            return [message_from(r) for r in rows]
        rows = await self._pool.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1"
            " AND ($2::bigint IS NULL OR seq < $2) ORDER BY seq DESC LIMIT $3",
            chat_id,
            before_seq,
            limit,
        )
        return [message_from(r) for r in reversed(rows)]

    async def between(self, chat_id: int, after_seq: int, upto_seq: int) -> list[Message]:
        """Messages with after_seq < seq <= upto_seq, ascending (hole filling)."""
        rows = await self._pool.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = $1 AND seq > $2"
            " AND seq <= $3 ORDER BY seq",
            chat_id,
            after_seq,
            upto_seq,
        )
        return [message_from(r) for r in rows]

    async def positions(self, user_id: int, device_id: str) -> list[ChatPosition]:
        """Where the device stands in each of the user's chats."""
        rows = await self._pool.fetch(
            "SELECT cm.chat_id, cm.joined_seq, c.last_seq,"
            "       greatest(cm.joined_seq, coalesce(dc.acked_seq, 0)) AS acked_seq"
            " FROM chat_members cm JOIN chats c ON c.id = cm.chat_id"
            " LEFT JOIN device_cursors dc ON dc.user_id = cm.user_id AND dc.device_id = $2"
            "   AND dc.chat_id = cm.chat_id"
            " WHERE cm.user_id = $1",
            user_id,
            device_id,
        )
        return [
            ChatPosition(r["chat_id"], r["joined_seq"], r["acked_seq"], r["last_seq"]) for r in rows
        ]

    async def position(self, user_id: int, device_id: str, chat_id: int) -> ChatPosition | None:
        """As `positions`, for one chat (None: not a member)."""
        row = await self._pool.fetchrow(
            "SELECT cm.chat_id, cm.joined_seq, c.last_seq,"
            "       greatest(cm.joined_seq, coalesce(dc.acked_seq, 0)) AS acked_seq"
            " FROM chat_members cm JOIN chats c ON c.id = cm.chat_id"
            " LEFT JOIN device_cursors dc ON dc.user_id = cm.user_id AND dc.device_id = $2"
            "   AND dc.chat_id = cm.chat_id"
            " WHERE cm.user_id = $1 AND cm.chat_id = $3",
            user_id,
            device_id,
            chat_id,
        )
        if row is None:
            return None
        return ChatPosition(row["chat_id"], row["joined_seq"], row["acked_seq"], row["last_seq"])

    async def ranges(self, wanted: Sequence[tuple[int, int, int]]) -> list[Message]:
        """Messages of several chats at once: for each (chat_id, after_seq, upto_seq), those with
        after_seq < seq <= upto_seq; ascending by seq within a chat."""
        if not wanted:
            return []
        chat_ids, lows, highs = zip(*wanted, strict=True)
        rows = await self._pool.fetch(
            f"SELECT m.{MESSAGE_COLUMNS.replace(', ', ', m.')}"
            " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS w(chat_id, lo, hi)"
            " JOIN LATERAL (SELECT * FROM messages x WHERE x.chat_id = w.chat_id"
            "   AND x.seq > w.lo AND x.seq <= w.hi ORDER BY x.seq) m ON true"
            " ORDER BY m.chat_id, m.seq",
            list(chat_ids),
            list(lows),
            list(highs),
        )
        return [message_from(r) for r in rows]
