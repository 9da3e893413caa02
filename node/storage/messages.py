"""Messages: the chat actor's group commit, history pages and delivery backlogs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from node.domain import ChatPosition, Message, PostResult
from node.storage.errors import ChatMissing, Fenced
from node.storage.records import MESSAGE_COLUMNS, message_from


@dataclass(slots=True, frozen=True)
class NewMessage:
    sender_id: int
    client_msg_id: str
    text: str
    attachments: tuple[dict[str, Any], ...] = ()


@dataclass(slots=True, frozen=True)
class ChatBatch:
    """One chat's part of a group commit, written at the chat actor's fencing epoch."""

    chat_id: int
    epoch: int
    messages: Sequence[NewMessage]


_RETRIES_ON_RACE = 3


class MessageStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def post_batch(
        self, chat_id: int, epoch: int, batch: Sequence[NewMessage]
    ) -> list[PostResult]:
        """Store one chat's batch in one transaction; one result per input, in order. Raises
        Fenced (the chat is owned at another epoch) or ChatMissing. See `post_many`."""
        outcome = (await self.post_many([ChatBatch(chat_id, epoch, batch)]))[chat_id]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def post_many(
        self, batches: Sequence[ChatBatch], *, timeout: float | None = None
    ) -> dict[int, list[PostResult] | Fenced | ChatMissing]:
        """Group commit of several chats in ONE transaction (`store_batches`): per chat, seqs
        are assigned gap-free to the created rows only, (sender, client_msg_id) repeats return
        the original, non-members are refused; a fenced or missing chat fails alone. Each batch
        must hold distinct (sender, client_msg_id) pairs and each chat appears once.

        When another transaction stores the same pair concurrently the unique index may refuse
        this one; it is retried, and the pair then reports a conflict. `timeout` bounds the
        statement: past it the database cancels it (nothing is stored), TimeoutError is raised."""
        ordered = sorted(batches, key=lambda b: b.chat_id)  # one lock order for every caller
        chats, epochs, row_chat = [], [], []
        senders, cmids, texts, attachments = [], [], [], []
        for k, batch in enumerate(ordered, start=1):
            chats.append(batch.chat_id)
            epochs.append(batch.epoch)
            for message in batch.messages:
                row_chat.append(k)
                senders.append(message.sender_id)
                cmids.append(message.client_msg_id)
                texts.append(message.text)
                attachments.append(orjson.dumps(message.attachments).decode())
        rows = await self._store(
            [chats, epochs, row_chat, senders, cmids, texts, attachments], timeout
        )
        results: list[PostResult | None] = [None] * len(row_chat)
        failed: dict[int, Fenced | ChatMissing] = {}
        for r in rows:
            position = r["idx"] - 1
            chat_id = chats[row_chat[position] - 1]
            if r["status"] == "fenced":
                failed[chat_id] = Fenced(f"chat {chat_id} is owned at another epoch")
            elif r["status"] == "missing":
                failed[chat_id] = ChatMissing(chat_id)
            else:
                results[position] = PostResult(
                    status=r["status"],
                    message=message_from(r) if r["id"] is not None else None,
                    members_version=r["members_version"],
                )
        out: dict[int, list[PostResult] | Fenced | ChatMissing] = {}
        offset = 0
        for batch in ordered:
            count = len(batch.messages)
            if batch.chat_id in failed:
                out[batch.chat_id] = failed[batch.chat_id]
            else:
                out[batch.chat_id] = [r for r in results[offset : offset + count] if r is not None]
            offset += count
        return out

    async def _store(self, args: list[list[Any]], timeout: float | None) -> list[asyncpg.Record]:
        for attempt in range(_RETRIES_ON_RACE):
            try:
                rows: list[asyncpg.Record] = await self._pool.fetch(
                    "SELECT * FROM store_batches($1, $2, $3, $4, $5, $6, $7)",
                    *args,
                    timeout=timeout,
                )
                return rows
            except asyncpg.UniqueViolationError:
                if attempt == _RETRIES_ON_RACE - 1:
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

    async def between(
        self, chat_id: int, after_seq: int, upto_seq: int, *, member: int
    ) -> list[Message]:
        """Messages with after_seq < seq <= upto_seq that `member` may receive: none posted
        before they (last) joined the chat, and none at all unless they are a member now.
        Ascending (hole filling). Exact at the moment of reading: a member removed and added
        again gets nothing of what was posted while they were out."""
        rows = await self._pool.fetch(
            f"SELECT m.{MESSAGE_COLUMNS.replace(', ', ', m.')} FROM messages m"
            " JOIN chat_members cm ON cm.chat_id = m.chat_id AND cm.user_id = $4"
            " WHERE m.chat_id = $1 AND m.seq > greatest($2, cm.joined_seq) AND m.seq <= $3"
            " ORDER BY m.seq",
            chat_id,
            after_seq,
            upto_seq,
            member,
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

    async def ranges(self, wanted: Sequence[tuple[int, int, int]], *, member: int) -> list[Message]:
        """Messages of several chats at once that `member` may receive (as `between`): for each
        (chat_id, after_seq, upto_seq), those with after_seq < seq <= upto_seq; ascending by seq
        within a chat."""
        if not wanted:
            return []
        chat_ids, lows, highs = zip(*wanted, strict=True)
        rows = await self._pool.fetch(
            f"SELECT m.{MESSAGE_COLUMNS.replace(', ', ', m.')}"
            " FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS w(chat_id, lo, hi)"
            " JOIN chat_members cm ON cm.chat_id = w.chat_id AND cm.user_id = $4"
            " JOIN LATERAL (SELECT * FROM messages x WHERE x.chat_id = w.chat_id"
            "   AND x.seq > greatest(w.lo, cm.joined_seq) AND x.seq <= w.hi ORDER BY x.seq) m"
            " ON true ORDER BY m.chat_id, m.seq",
            list(chat_ids),
            list(lows),
            list(highs),
            member,
        )
        return [message_from(r) for r in rows]
