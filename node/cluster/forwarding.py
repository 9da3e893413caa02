"""Requests between nodes: commands for chats that another node owns.

A forwarded send waits for the owner's `SendReply` at most `timeout`; then the sender is answered
`unavailable` (a client retries with the same client_msg_id, which is idempotent) and the owner is
forgotten, so the next command looks the chat up again. Signals (typing, read) go one way.

On the owner's side, `remote_command` turns a `SendRequest` into a `SendCommand` whose answer
goes back to the origin: answers are queued (never blocking the chat actor) and published in
order by `run`, a loop the node's supervisor owns.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass

from node.actors.commands import ChatCommand, ChatSignalCommand, SendCommand, SendOutcome
from node.cluster import envelopes
from node.cluster.connection import REDIS_DOWN
from node.cluster.identity import NodeIdentity
from node.cluster.owners import RemoteOwners
from node.cluster.transport import Publisher
from node.frames import message_from_json

log = logging.getLogger(__name__)

_REDIS_DOWN = REDIS_DOWN


@dataclass(slots=True)
class _Pending:
    command: SendCommand
    timer: asyncio.TimerHandle


class Forwarder:
    def __init__(
        self,
        identity: NodeIdentity,
        publisher: Publisher,
        owners: RemoteOwners,
        *,
        timeout: float,
    ) -> None:
        self._node = identity.incarnation
        self._publisher = publisher
        self._owners = owners
        self._timeout = timeout
        self._pending: dict[str, _Pending] = {}
        self._replies: deque[tuple[str, envelopes.SendReply]] = deque()
        self._wakeup = asyncio.Event()

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- this node asks -------------------------------------------------------------------------

    async def forward(self, owner: str, command: ChatCommand) -> None:
        """Send `command` to the chat's owner. A send is answered when the owner replies, or
        `unavailable` when it cannot be reached or does not reply in time."""
        envelope: envelopes.Envelope
        if isinstance(command, ChatSignalCommand):
            envelope = envelopes.ChatSignal(
                origin=self._node,
                chat_id=command.chat_id,
                user_id=command.user_id,
                device_id=command.device_id,
                signal=command.signal,
                seq=command.seq,
            )
        else:
            request_id = uuid.uuid4().hex
            envelope = envelopes.SendRequest(
                origin=self._node,
                trace=command.trace,
                request_id=request_id,
                chat_id=command.chat_id,
                sender_id=command.sender_id,
                client_msg_id=command.client_msg_id,
                text=command.text,
                attachments=list(command.attachments),
            )
            timer = asyncio.get_running_loop().call_later(
                self._timeout, self._timed_out, request_id
            )
            self._pending[request_id] = _Pending(command, timer)
        try:
            receivers = await self._publisher.publish(owner, envelope)
        except _REDIS_DOWN:
            receivers = 0
        if receivers == 0:  # the owner is gone: forget it, its lease will lapse
            self._owners.forget(command.chat_id)
            if isinstance(envelope, envelopes.SendRequest):
                self._settle(envelope.request_id, SendOutcome.failed("unavailable"))

    def on_reply(self, reply: envelopes.SendReply) -> None:
        status = reply.status
        if reply.message is None:
            outcome = SendOutcome.failed(status)
        else:
            message = message_from_json(reply.message)
            outcome = SendOutcome(status, message, reply.message.encode())
        self._settle(reply.request_id, outcome)

    def _timed_out(self, request_id: str) -> None:
        pending = self._pending.get(request_id)
        if pending is not None:
            self._owners.forget(pending.command.chat_id)
            self._settle(request_id, SendOutcome.failed("unavailable"))

    def _settle(self, request_id: str, outcome: SendOutcome) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.timer.cancel()
            pending.command.answer(outcome)

    def fail_all(self) -> None:
        """Shutdown: answer every send still waiting for its owner."""
        for request_id in list(self._pending):
            self._settle(request_id, SendOutcome.failed("unavailable"))

    # --- another node asks ----------------------------------------------------------------------

    def remote_command(self, request: envelopes.SendRequest) -> SendCommand:
        """The send another node forwarded here; its answer is published back to that node."""
        origin, request_id = request.origin, request.request_id

        def reply(outcome: SendOutcome) -> None:
            answer = envelopes.SendReply(
                origin=self._node,
                request_id=request_id,
                status=outcome.status,
                message=outcome.message_json.decode() if outcome.message_json else None,
            )
            self._replies.append((origin, answer))
            self._wakeup.set()

        return SendCommand(
            chat_id=request.chat_id,
            sender_id=request.sender_id,
            client_msg_id=request.client_msg_id,
            text=request.text,
            attachments=tuple(request.attachments),
            reply=reply,
            trace=request.trace,
        )

    async def run(self) -> None:
        """Publish queued answers in order, until cancelled. An answer that cannot be published
        is dropped (the origin answers its sender `unavailable` when its wait runs out)."""
        while True:
            while not self._replies:
                self._wakeup.clear()
                await self._wakeup.wait()
            origin, answer = self._replies.popleft()
            try:
                await self._publisher.publish(origin, answer)
            except _REDIS_DOWN as exc:
                log.warning("forward.reply_failed", extra={"error": str(exc)})
