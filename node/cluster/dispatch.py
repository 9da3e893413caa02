"""Envelopes from other nodes, each handed to the part of this node that handles its kind."""

from __future__ import annotations

from node import tracing
from node.actors.commands import ChatSignalCommand
from node.actors.local_users import LocalUsers
from node.actors.ports import BatchMeta, LiveBatch
from node.actors.user import DeviceTakenOver
from node.cluster import envelopes
from node.cluster.forwarding import Forwarder
from node.cluster.identity import NodeIdentity
from node.cluster.placement import ChatPlacement
from node.cluster.presence_fanout import tell_watchers


class Dispatcher:
    def __init__(
        self,
        identity: NodeIdentity,
        *,
        users: LocalUsers,
        placement: ChatPlacement,
        forwarder: Forwarder,
    ) -> None:
        self._node = identity.incarnation
        self._users = users
        self._placement = placement
        self._forwarder = forwarder

    async def on_envelope(self, envelope: envelopes.Envelope) -> None:
        if isinstance(envelope, envelopes.Deliver):
            entries = [(m.seq, m.frame.encode()) for m in envelope.messages]
            with tracing.span(
                "node.deliver", parent=envelope.trace, chat_id=envelope.chat_id, node=self._node
            ):
                meta = BatchMeta(envelope.committed_at, tracing.carrier())
            self._users.deliver(envelope.user_ids, LiveBatch.of(envelope.chat_id, entries, meta))
        elif isinstance(envelope, envelopes.UserFrame):
            self._users.offer_frame(
                envelope.user_ids,
                envelope.frame.encode(),
                skip_user=envelope.skip_user,
                skip_device=envelope.skip_device,
            )
        elif isinstance(envelope, envelopes.PresenceBatch):
            tell_watchers(self._users, envelope.changes, envelope.watchers)
        elif isinstance(envelope, envelopes.SendRequest):
            await self._placement.route(self._forwarder.remote_command(envelope), from_peer=True)
        elif isinstance(envelope, envelopes.SendReply):
            self._forwarder.on_reply(envelope)
        elif isinstance(envelope, envelopes.ChatSignal):
            await self._placement.route(
                ChatSignalCommand(
                    envelope.chat_id,
                    envelope.user_id,
                    envelope.device_id,
                    envelope.signal,
                    envelope.seq,
                ),
                from_peer=True,
            )
        elif isinstance(envelope, envelopes.DeviceTaken):
            self._users.tell(envelope.user_id, DeviceTakenOver(envelope.device_id, envelope.epoch))
