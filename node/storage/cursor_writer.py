"""Batched persistence of device ack cursors.

`mark` only records the highest seq per (user, device, chat) in memory; a flush every
`interval` (at most 250 ms, the contract's durability bound for acks) writes them all in one
statement. A failed flush keeps the marks and retries at the next tick; `close` flushes once more.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from node import metrics
from node.storage import CursorStore

log = logging.getLogger(__name__)

CursorKey = tuple[int, str, int]


class CursorWriter:
    def __init__(self, store: CursorStore, *, interval: float) -> None:
        self._store = store
        self._interval = interval
        self._dirty: dict[CursorKey, int] = {}
        self._in_flight: dict[CursorKey, int] = {}
        self._wakeup = asyncio.Event()
        self.flushed = 0

    def mark(self, user_id: int, device_id: str, chat_id: int, seq: int) -> None:
        key = (user_id, device_id, chat_id)
        if seq > self._dirty.get(key, -1):
            self._dirty[key] = seq
            self._wakeup.set()

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def unsaved(self, user_id: int, device_id: str, chats: Iterable[int]) -> dict[int, int]:
        """Acks of this device in `chats` not yet in PostgreSQL (chat -> seq): a device that
        reconnects before the flush must still never get them again. O(len(chats)), however
        many acks are pending (a reconnect storm asks once per device)."""
        out: dict[int, int] = {}
        if not self._dirty and not self._in_flight:
            return out
        for chat in chats:
            key = (user_id, device_id, chat)
            seq = max(self._in_flight.get(key, -1), self._dirty.get(key, -1))
            if seq >= 0:
                out[chat] = seq
        return out

    async def flush(self) -> None:
        if not self._dirty:
            return
        batch, self._dirty = self._dirty, {}
        self._in_flight = batch
        try:
            await self._store.save([(u, d, c, s) for (u, d, c), s in batch.items()])
            self.flushed += len(batch)
        except BaseException:
            for key, seq in batch.items():  # keep them for the next attempt
                if seq > self._dirty.get(key, -1):
                    self._dirty[key] = seq
            raise
        finally:
            self._in_flight = {}

    async def run(self) -> None:
        """Flush at most every `interval` while there is something to flush, until cancelled."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self._interval)
            try:
                await self.flush()
            except (TimeoutError, OSError) as exc:
                metrics.POSTGRES_ERRORS.labels(op="cursors").inc()
                log.warning(
                    "cursors.flush_failed", extra={"error": str(exc), "pending": self.pending}
                )
                self._wakeup.set()
            except Exception as exc:  # asyncpg errors: PostgreSQL down or restarting
                metrics.POSTGRES_ERRORS.labels(op="cursors").inc()
                log.warning(
                    "cursors.flush_failed", extra={"error": repr(exc), "pending": self.pending}
                )
                self._wakeup.set()
