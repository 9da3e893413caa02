"""Everything a device's connection reads and writes about its delivery state, behind one
service: its epoch (a newer connection of the same device fences older ones), where it stands in
each chat and the messages it misses (PostgreSQL, the record), a dormant user's mailbox (Redis, a
cache that may be gone), and its acks (batched by the cursor writer)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from node import metrics
from node.cluster.connection import REDIS_DOWN
from node.cluster.mailbox import MailboxContents, Mailboxes
from node.domain import ChatPosition, Message
from node.storage import Storage
from node.storage.cursor_writer import CursorWriter

log = logging.getLogger(__name__)


class DeviceSync:
    def __init__(self, storage: Storage, mailboxes: Mailboxes, cursors: CursorWriter) -> None:
        self._messages = storage.messages
        self._reads = storage.reads  # batched across connecting devices
        self._mailboxes = mailboxes
        self._cursors = cursors

    async def connected(self, user_id: int, device_id: str) -> int:
        """Record that the device connected; its new epoch (older connections are superseded).
        Batched with the other devices connecting meanwhile (`BatchedReads`)."""
        return await self._reads.touch_device(user_id, device_id)

    async def positions(self, user_id: int, device_id: str) -> list[ChatPosition]:
        """Where the device stands in each of the user's chats, counting acks not yet written
        (a device that reconnects before the flush must still never get them again). Batched
        with the other devices asking meanwhile."""
        positions = await self._reads.positions(user_id, device_id)
        unsaved = self._cursors.unsaved(user_id, device_id, (p.chat_id for p in positions))
        if not unsaved:
            return positions
        return [
            replace(p, acked_seq=max(p.acked_seq, unsaved.get(p.chat_id, 0))) for p in positions
        ]

    async def position(self, user_id: int, device_id: str, chat_id: int) -> ChatPosition | None:
        """As `positions`, for one chat; None when the user is not a member."""
        return await self._messages.position(user_id, device_id, chat_id)

    async def between(
        self, user_id: int, chat_id: int, after_seq: int, upto_seq: int
    ) -> list[Message]:
        """(after_seq, upto_seq] of a chat as the user may receive it now: nothing from before
        they (last) joined, nothing if they are not a member (see `MessageStore.between`)."""
        return await self._messages.between(chat_id, after_seq, upto_seq, member=user_id)

    async def ranges(self, user_id: int, wanted: Sequence[tuple[int, int, int]]) -> list[Message]:
        """As `between`, for several chats at once (the backlog on connect, a resync), batched
        with the other devices asking meanwhile: one query for all of them."""
        return await self._reads.ranges(wanted, member=user_id)

    async def mailbox(self, user_id: int) -> MailboxContents | None:
        """The dormant user's mailbox, or None when Redis cannot be read (the record is
        PostgreSQL: the caller carries on without it)."""
        try:
            return await self._mailboxes.read(user_id)
        except REDIS_DOWN as exc:
            metrics.REDIS_ERRORS.labels(op="mailbox_read").inc()
            log.warning("backlog.mailbox_unreadable", extra={"user_id": user_id, "error": str(exc)})
            return None

    async def trim_mailbox(self, user_id: int, consumed: int) -> None:
        try:
            await self._mailboxes.trim(user_id, consumed)
        except REDIS_DOWN as exc:
            log.warning(
                "backlog.mailbox_trim_failed", extra={"user_id": user_id, "error": str(exc)}
            )

    def acked(self, user_id: int, device_id: str, chat_id: int, seq: int) -> None:
        """Record an ack (written to PostgreSQL in the next flush, within 250 ms)."""
        self._cursors.mark(user_id, device_id, chat_id, seq)
