"""Per-device delivery cursors: how far each device acknowledged each chat."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg


class CursorStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def save(self, cursors: Sequence[tuple[int, str, int, int]]) -> None:
        """Upsert (user_id, device_id, chat_id, acked_seq) rows; a cursor never moves back.
        Cursors of chats the user is no longer a member of are skipped."""
        if not cursors:
            return
        users, devices, chats, seqs = (list(col) for col in zip(*cursors, strict=True))
        await self._pool.execute(
            "INSERT INTO device_cursors AS dc (user_id, device_id, chat_id, acked_seq)"
            " SELECT w.u, w.d, w.c, w.s"
            " FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) AS w(u, d, c, s)"
            " JOIN chat_members cm ON cm.chat_id = w.c AND cm.user_id = w.u"
            " ORDER BY w.c, w.u, w.d"  # chats in id order, as every other writer locks them
            " ON CONFLICT (user_id, device_id, chat_id) DO UPDATE"
            " SET acked_seq = greatest(dc.acked_seq, excluded.acked_seq), updated_at = now()",
            users,
            devices,
            chats,
            seqs,
        )

    async def touch_device(self, user_id: int, device_id: str) -> int:
        """Record that the device connected; returns its new epoch (fences older connections)."""
        epoch = await self._pool.fetchval(
            "INSERT INTO devices AS d (user_id, device_id, epoch) VALUES ($1, $2, 1)"
            " ON CONFLICT (user_id, device_id) DO UPDATE"
            " SET epoch = d.epoch + 1, last_seen_at = now() RETURNING epoch",
            user_id,
            device_id,
        )
        return int(epoch)
