"""The reads (and the one upsert) of a connecting device, batched across devices.

When thousands of devices connect at once (their node died and they all come back), each needs
the same four statements: its user exists (the token's check), its epoch (`devices` upsert),
where it stands in each chat, and the messages it misses. Served one device at a time that is
four round trips and four transactions per device, queued on a pool of a few connections. Here
each kind goes through a `Batcher`: the requests of every device connecting meanwhile are served
by ONE statement over arrays (`unnest ... WITH ORDINALITY`), so a storm of N devices costs about
4 * N / max_batch statements, and a lone device costs the same statements as before, at once.

Each method answers exactly as its one-device counterpart in `MessageStore` / `CursorStore` /
`UserStore` does (same SQL conditions; `tests/test_batched_reads.py` compares them).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

import asyncpg

from node import metrics
from node.batching import Batcher
from node.domain import ChatPosition, Message
from node.storage.errors import CONNECTION_ERRORS
from node.storage.records import MESSAGE_COLUMNS, message_from

# (member, [(chat_id, after_seq, upto_seq), ...])
RangeRequest = tuple[int, tuple[tuple[int, int, int], ...]]

_POSITIONS = (
    "SELECT w.i, cm.chat_id, cm.joined_seq, c.last_seq,"
    "       greatest(cm.joined_seq, coalesce(dc.acked_seq, 0)) AS acked_seq"
    " FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS w(u, d, i)"
    " JOIN chat_members cm ON cm.user_id = w.u"
    " JOIN chats c ON c.id = cm.chat_id"
    " LEFT JOIN device_cursors dc ON dc.user_id = w.u AND dc.device_id = w.d"
    "   AND dc.chat_id = cm.chat_id"
)

_RANGES = (
    f"SELECT w.i, m.{MESSAGE_COLUMNS.replace(', ', ', m.')}"
    " FROM unnest($1::int[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])"
    "   AS w(i, u, chat_id, lo, hi)"
    " JOIN chat_members cm ON cm.chat_id = w.chat_id AND cm.user_id = w.u"
    " JOIN LATERAL (SELECT * FROM messages x WHERE x.chat_id = w.chat_id"
    "   AND x.seq > greatest(w.lo, cm.joined_seq) AND x.seq <= w.hi ORDER BY x.seq) m ON true"
    " ORDER BY w.i, m.chat_id, m.seq"
)

# `k` connections of one device in the same batch: the epoch moves by k, and they get the k
# epochs in the order they asked (the last one fences the others). Rows are upserted in key
# order, as every batch does, so that two batches in flight cannot deadlock.
_TOUCH = (
    "INSERT INTO devices AS d (user_id, device_id, epoch)"
    " SELECT w.u, w.d, w.k FROM unnest($1::bigint[], $2::text[], $3::bigint[]) AS w(u, d, k)"
    " ORDER BY w.u, w.d"
    " ON CONFLICT (user_id, device_id) DO UPDATE"
    " SET epoch = d.epoch + excluded.epoch, last_seen_at = now()"
    " RETURNING user_id, device_id, epoch"
)


class BatchedReads:
    # one statement of each kind in flight: a storm's requests gather behind it into fewer,
    # larger batches (with two in flight, node B served 10,000 reconnects in ~6,500 statements
    # of 5-7 devices each, and each statement's fixed cost is CPU the storm is short of)
    def __init__(self, pool: asyncpg.Pool, *, max_batch: int = 500, parallel: int = 1) -> None:
        self._pool = pool
        shape: dict[str, Any] = {
            "max_batch": max_batch,
            "parallel": parallel,
            "whole_batch": CONNECTION_ERRORS,
        }
        self._exists = Batcher[int, bool](self._serve_exists, name="user_exists", **shape)
        self._touch = Batcher[tuple[int, str], int](self._serve_touch, name="touch_device", **shape)
        self._positions = Batcher[tuple[int, str], list[ChatPosition]](
            self._serve_positions, name="positions", **shape
        )
        self._ranges = Batcher[RangeRequest, list[Message]](
            self._serve_ranges, name="ranges", **shape
        )

    @property
    def batchers(self) -> tuple[Batcher[Any, Any], ...]:
        return (self._exists, self._touch, self._positions, self._ranges)

    async def user_exists(self, user_id: int) -> bool:
        """As `UserStore.exists`."""
        return await self._exists(user_id)

    async def touch_device(self, user_id: int, device_id: str) -> int:
        """As `CursorStore.touch_device`: record that the device connected; its new epoch."""
        return await self._touch((user_id, device_id))

    async def positions(self, user_id: int, device_id: str) -> list[ChatPosition]:
        """As `MessageStore.positions`: where the device stands in each of the user's chats."""
        return await self._positions((user_id, device_id))

    async def ranges(self, wanted: Sequence[tuple[int, int, int]], *, member: int) -> list[Message]:
        """As `MessageStore.ranges`: per (chat_id, after_seq, upto_seq) the messages `member`
        may receive, ascending by seq within a chat."""
        if not wanted:
            return []
        return await self._ranges((member, tuple(wanted)))

    async def aclose(self) -> None:
        for b in self.batchers:
            await b.aclose()

    # --- one statement per batch -----------------------------------------------------------

    async def _serve_exists(self, user_ids: Sequence[int]) -> list[bool]:
        _count("user_exists", len(user_ids))
        rows = await self._pool.fetch(
            "SELECT id FROM users WHERE id = ANY($1::bigint[])", list(set(user_ids))
        )
        found = {r["id"] for r in rows}
        return [u in found for u in user_ids]

    async def _serve_touch(self, devices: Sequence[tuple[int, str]]) -> list[int]:
        _count("touch_device", len(devices))
        times = Tally(devices)
        keys = list(times)
        rows = await self._pool.fetch(
            _TOUCH, [u for u, _ in keys], [d for _, d in keys], [times[k] for k in keys]
        )
        # the newest epoch of each device; earlier requests of the same device get the lower ones
        next_epoch = {
            (r["user_id"], r["device_id"]): int(r["epoch"]) - times[(r["user_id"], r["device_id"])]
            for r in rows
        }
        out: list[int] = []
        for key in devices:
            next_epoch[key] += 1
            out.append(next_epoch[key])
        return out

    async def _serve_positions(
        self, devices: Sequence[tuple[int, str]]
    ) -> list[list[ChatPosition]]:
        _count("positions", len(devices))
        rows = await self._pool.fetch(_POSITIONS, [u for u, _ in devices], [d for _, d in devices])
        out: list[list[ChatPosition]] = [[] for _ in devices]
        for r in rows:
            out[r["i"] - 1].append(
                ChatPosition(r["chat_id"], r["joined_seq"], r["acked_seq"], r["last_seq"])
            )
        return out

    async def _serve_ranges(self, requests: Sequence[RangeRequest]) -> list[list[Message]]:
        _count("ranges", len(requests))
        idx: list[int] = []
        members: list[int] = []
        chats: list[int] = []
        lows: list[int] = []
        highs: list[int] = []
        for i, (member, wanted) in enumerate(requests):
            for chat_id, low, high in wanted:
                idx.append(i)
                members.append(member)
                chats.append(chat_id)
                lows.append(low)
                highs.append(high)
        rows = await self._pool.fetch(_RANGES, idx, members, chats, lows, highs)
        out: list[list[Message]] = [[] for _ in requests]
        for r in rows:
            out[r["i"]].append(message_from(r))
        return out


def _count(read: str, requests: int) -> None:
    metrics.BATCHED_READ_QUERIES.labels(read=read).inc()
    metrics.BATCHED_READS.labels(read=read).inc(requests)
