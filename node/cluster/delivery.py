"""Delivery to users' devices across the cluster (the chat and user actors' `Delivery` port).

Devices on this node get stored messages and ephemeral frames (typing, read marks) in-process,
straight from here (`LocalUsers.deliver`: one batch encoded once, written to each socket that can
take it at once; `LocalUsers.offer_frame`). Everything for other nodes and for dormant users'
mailboxes goes through `Outbound`, one ordered, batched Redis script call for many chats (see
`node.cluster.fanout`). Callers wait only for room in Outbound's bounded queue, never for Redis.
Presence frames are the exception: they go through user actors (`node.cluster.presence_fanout`),
so a change is never written before the snapshot its device is still waiting for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from node import tracing
from node.actors.local_users import LocalUsers
from node.actors.ports import BatchMeta, LiveBatch
from node.cluster import envelopes
from node.cluster.fanout import FanoutGroup, PushHint
from node.cluster.identity import NodeIdentity
from node.cluster.mailbox import mailbox_entry
from node.cluster.outbound import Outbound
from node.frames import EncodedMessage


class Delivery:
    def __init__(self, identity: NodeIdentity, users: LocalUsers, outbound: Outbound) -> None:
        self._node = identity.incarnation
        self._users = users
        self._outbound = outbound

    async def messages(
        self, chat_id: int, member_ids: Sequence[int], batch: Sequence[EncodedMessage]
    ) -> None:
        """Stored messages to every device of every member: in-process here, one script call
        for the other nodes and the dormant members' mailboxes."""
        entries = [(e.seq, e.frame) for e in batch]
        meta = BatchMeta(time.time(), tracing.carrier())
        self._users.deliver(member_ids, LiveBatch.of(chat_id, entries, meta))
        payload = envelopes.encode(
            envelopes.Deliver(
                origin=self._node,
                chat_id=chat_id,
                user_ids=list(member_ids),
                trace=meta.trace,
                committed_at=meta.committed_at,
                messages=[envelopes.MessageEntry(seq=s, frame=f.decode()) for s, f in entries],
            )
        )
        boxed = [mailbox_entry(chat_id, s, f) for s, f in entries]
        await self._outbound.submit(FanoutGroup(member_ids, payload, boxed, _push_hint(batch)))

    async def frame(
        self,
        user_ids: Sequence[int],
        frame: bytes,
        *,
        skip_user: int | None = None,
        skip_device: str | None = None,
    ) -> None:
        """An ephemeral frame for every connected device of these users (none is stored)."""
        if not user_ids:
            return
        self._users.offer_frame(user_ids, frame, skip_user=skip_user, skip_device=skip_device)
        payload = envelopes.encode(
            envelopes.UserFrame(
                origin=self._node,
                user_ids=list(user_ids),
                frame=frame.decode(),
                skip_user=skip_user,
                skip_device=skip_device,
            )
        )
        await self._outbound.submit(FanoutGroup(list(user_ids), payload))

    async def device_taken(self, user_id: int, device_id: str, epoch: int) -> None:
        """A device connected here: other nodes close their older connection of it."""
        payload = envelopes.encode(
            envelopes.DeviceTaken(
                origin=self._node, user_id=user_id, device_id=device_id, epoch=epoch
            )
        )
        await self._outbound.submit(FanoutGroup([user_id], payload))


def _push_hint(batch: Sequence[EncodedMessage]) -> PushHint | None:
    """The batch's newest message, and the newest one not from its sender (for that sender)."""
    if not batch:
        return None
    newest = batch[-1].message
    other = next(
        (e.message.id for e in reversed(batch) if e.message.sender_id != newest.sender_id), 0
    )
    return PushHint(newest.id, newest.sender_id, other)
