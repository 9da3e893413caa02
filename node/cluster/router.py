"""The one place that decides local or remote.

Chats: a command goes to this node's chat actor when there is one, or when the chat's lease is
free (or ours, or its holder is dead) — then an actor is started here and takes the lease; else it
is forwarded to the owner's inbox. Users: deliveries go in-process to this node's user actors, and
through one Redis script to every other node holding devices of the members (or into the Redis
mailbox of members with no device anywhere).

Forwarded sends wait for the owner's reply at most `forward_timeout`; then the sender is told
`unavailable` (a client retries with the same client_msg_id, which is idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from node import tracing
from node.actors.base import ActorRef, ActorRegistry, ActorStopped, MailboxFull
from node.actors.chat import ChatActor, ChatCommand, ChatSignalCommand, SendCommand, SendOutcome
from node.actors.session import BatchMeta
from node.actors.user import (
    DeliverFrame,
    DeliverMessages,
    DeviceTakenOver,
    Resync,
    UserActor,
    UserMessage,
)
from node.cluster import envelopes, keys
from node.cluster.directory import Directory
from node.cluster.fanout import FanoutGroup, mailbox_entry
from node.cluster.identity import NodeIdentity
from node.cluster.outbound import Outbound
from node.cluster.transport import Transport
from node.frames import EncodedMessage, message_from_json
from node.tasks import TaskSet

log = logging.getLogger(__name__)

_REDIS_DOWN = (RedisError, OSError)
_MAX_HOPS = 3


@dataclass(slots=True)
class _Pending:
    command: SendCommand
    timer: asyncio.TimerHandle


class Router:
    def __init__(
        self,
        *,
        identity: NodeIdentity,
        directory: Directory,
        outbound: Outbound,
        chats: ActorRegistry,
        users: ActorRegistry,
        chat_factory: Callable[[int], ChatActor],
        user_factory: Callable[[int], UserActor],
        forward_timeout: float,
    ) -> None:
        self.node = identity.incarnation  # this process: origin of envelopes, lease holder
        self._directory = directory
        self._outbound = outbound
        self.chats = chats
        self.users = users
        self._chat_factory = chat_factory
        self._user_factory = user_factory
        self._forward_timeout = forward_timeout
        self._owners: dict[int, tuple[str, float]] = {}  # chat -> (remote owner, cached until)
        self._pending: dict[str, _Pending] = {}
        self.transport: Transport | None = None
        self.tasks = TaskSet("router")

    # --- chats ---------------------------------------------------------------------------------

    async def send(self, command: SendCommand) -> None:
        """Hand a send to its chat's owner; the outcome comes back through `command.reply`."""
        await self._to_chat(command)

    async def signal(self, command: ChatSignalCommand) -> None:
        await self._to_chat(command)

    async def _to_chat(self, command: ChatCommand, *, attempts: int = 2) -> None:
        for _ in range(attempts):
            try:
                target = await self._resolve_chat(command.chat_id)
            except _REDIS_DOWN as exc:
                log.warning("route.directory_unavailable", extra={"error": str(exc)})
                _fail(command, "unavailable")
                return
            except ActorStopped:  # the node is shutting down: no new chat actors
                _fail(command, "unavailable")
                return
            if isinstance(target, str):
                await self._forward(target, command)
                return
            try:
                target.tell(command)
                return
            except MailboxFull:
                _fail(command, "rate_limited")
                return
            except ActorStopped:
                continue  # it was stopping: resolve again
        _fail(command, "unavailable")

    async def _resolve_chat(self, chat_id: int) -> ActorRef[ChatCommand] | str:
        ref = self.chats.get(chat_id)
        if ref is not None:
            return ref
        cached = self._owners.get(chat_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        holder = await self._directory.holder(keys.lease("chat", chat_id))
        ref = self.chats.get(chat_id)  # someone may have started it while we awaited
        if ref is not None:
            return ref
        if holder is None or holder == self.node:
            self._owners.pop(chat_id, None)
            return self.chats.spawn(chat_id, self._chat_factory(chat_id))
        self._owners[chat_id] = (holder, time.monotonic() + 1.0)
        return holder

    async def _forward(self, owner: str, command: ChatCommand) -> None:
        if isinstance(command, ChatSignalCommand):
            envelope: envelopes.Envelope = envelopes.ChatSignal(
                origin=self.node,
                chat_id=command.chat_id,
                user_id=command.user_id,
                device_id=command.device_id,
                signal=command.signal,
                seq=command.seq,
            )
        else:
            request_id = uuid.uuid4().hex
            envelope = envelopes.SendRequest(
                origin=self.node,
                trace=command.trace,
                request_id=request_id,
                chat_id=command.chat_id,
                sender_id=command.sender_id,
                client_msg_id=command.client_msg_id,
                text=command.text,
                attachments=list(command.attachments),
            )
            timer = asyncio.get_running_loop().call_later(
                self._forward_timeout, self._forward_timed_out, request_id
            )
            self._pending[request_id] = _Pending(command, timer)
        try:
            assert self.transport is not None
            receivers = await self.transport.publish(owner, envelope)
        except _REDIS_DOWN:
            receivers = 0
        if receivers == 0:  # the owner is gone: forget it, the lease will lapse
            self._owners.pop(command.chat_id, None)
            if isinstance(envelope, envelopes.SendRequest):
                self._settle(envelope.request_id, SendOutcome.failed("unavailable"))

    def _forward_timed_out(self, request_id: str) -> None:
        pending = self._pending.get(request_id)
        if pending is not None:
            self._owners.pop(pending.command.chat_id, None)
            self._settle(request_id, SendOutcome.failed("unavailable"))

    def _settle(self, request_id: str, outcome: SendOutcome) -> None:
        pending = self._pending.pop(request_id, None)
        if pending is not None:
            pending.timer.cancel()
            pending.command.reply(outcome)

    def reroute(self, commands: Sequence[ChatCommand], reason: Exception) -> None:
        """Commands a chat actor gave back (it stopped, or lost the chat): route them again."""
        if not commands:
            return
        for command in commands:
            self._owners.pop(command.chat_id, None)
        log.info("route.reroute", extra={"count": len(commands), "reason": str(reason)})
        self.tasks.start(self._reroute(list(commands)), name="reroute")

    async def _reroute(self, commands: list[ChatCommand]) -> None:
        for command in commands:
            command.hops += 1
            if command.hops > _MAX_HOPS:
                _fail(command, "unavailable")
            else:
                await self._to_chat(command, attempts=1)

    def lease_lost(self, lease_key: str) -> None:
        """The directory says another node holds this lease now: stop our actor for it."""
        kind, _, ident = lease_key.removeprefix(keys.PREFIX + "lease:").partition(":")
        if kind == "chat":
            ref = self.chats.get(int(ident))
            if ref is not None:
                ref.request_stop()

    # --- users ---------------------------------------------------------------------------------

    def user_ref(self, user_id: int) -> ActorRef[UserMessage]:
        """This node's actor for a user, started if needed (a device is connecting)."""
        ref = self.users.get(user_id)
        if ref is None:
            actor = self._user_factory(user_id)
            ref = self.users.spawn(user_id, actor)
            actor.ref = ref
        return ref

    async def deliver(
        self, chat_id: int, member_ids: list[int], batch: list[EncodedMessage]
    ) -> None:
        """Stored messages to every device of every member: in-process here, one script call
        for the other nodes and the dormant members' mailboxes."""
        entries = [(e.seq, e.frame) for e in batch]
        meta = BatchMeta(time.time(), tracing.carrier())
        self._tell_users(member_ids, DeliverMessages(chat_id, entries, meta))
        payload = envelopes.encode(
            envelopes.Deliver(
                origin=self.node,
                chat_id=chat_id,
                user_ids=member_ids,
                trace=meta.trace,
                committed_at=meta.committed_at,
                messages=[envelopes.MessageEntry(seq=s, frame=f.decode()) for s, f in entries],
            )
        )
        boxed = [mailbox_entry(chat_id, s, f) for s, f in entries]
        await self._outbound.submit(FanoutGroup(member_ids, payload, boxed))

    async def to_users(
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
        for uid in user_ids:
            self._tell_user(uid, DeliverFrame(frame, skip_device if uid == skip_user else None))
        payload = envelopes.encode(
            envelopes.UserFrame(
                origin=self.node,
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
                origin=self.node, user_id=user_id, device_id=device_id, epoch=epoch
            )
        )
        await self._outbound.submit(FanoutGroup([user_id], payload))

    def _tell_users(self, user_ids: Sequence[int], message: UserMessage) -> None:
        for uid in user_ids:
            self._tell_user(uid, message)

    def _tell_user(self, user_id: int, message: UserMessage) -> None:
        ref = self.users.get(user_id)
        if ref is None:
            return
        try:
            ref.tell(message)
        except MailboxFull:
            log.warning("route.user_overloaded", extra={"user_id": user_id})
            ref.request_stop()  # its sessions close; devices reconnect and resume from cursors
        except ActorStopped:
            pass

    # --- from other nodes ----------------------------------------------------------------------

    async def on_envelope(self, envelope: envelopes.Envelope) -> None:
        if isinstance(envelope, envelopes.Deliver):
            entries = [(m.seq, m.frame.encode()) for m in envelope.messages]
            with tracing.span(
                "node.deliver", parent=envelope.trace, chat_id=envelope.chat_id, node=self.node
            ):
                meta = BatchMeta(envelope.committed_at, tracing.carrier())
            self._tell_users(envelope.user_ids, DeliverMessages(envelope.chat_id, entries, meta))
        elif isinstance(envelope, envelopes.UserFrame):
            frame = envelope.frame.encode()
            for uid in envelope.user_ids:
                skip = envelope.skip_device if uid == envelope.skip_user else None
                self._tell_user(uid, DeliverFrame(frame, skip))
        elif isinstance(envelope, envelopes.SendRequest):
            await self._to_chat(self._remote_send(envelope))
        elif isinstance(envelope, envelopes.SendReply):
            self._settle(envelope.request_id, _outcome_from(envelope))
        elif isinstance(envelope, envelopes.ChatSignal):
            await self._to_chat(
                ChatSignalCommand(
                    envelope.chat_id,
                    envelope.user_id,
                    envelope.device_id,
                    envelope.signal,
                    envelope.seq,
                )
            )
        elif isinstance(envelope, envelopes.DeviceTaken):
            self._tell_user(envelope.user_id, DeviceTakenOver(envelope.device_id, envelope.epoch))

    def _remote_send(self, request: envelopes.SendRequest) -> SendCommand:
        origin, request_id = request.origin, request.request_id

        def reply(outcome: SendOutcome) -> None:
            envelope = envelopes.SendReply(
                origin=self.node,
                request_id=request_id,
                status=outcome.status,
                message=outcome.message_json.decode() if outcome.message_json else None,
            )
            self.tasks.start(self._publish_quietly(origin, envelope), name="send-reply")

        return SendCommand(
            chat_id=request.chat_id,
            sender_id=request.sender_id,
            client_msg_id=request.client_msg_id,
            text=request.text,
            attachments=tuple(request.attachments),
            reply=reply,
            trace=request.trace,
        )

    async def _publish_quietly(self, node: str, envelope: envelopes.Envelope) -> None:
        try:
            assert self.transport is not None
            await self.transport.publish(node, envelope)
        except _REDIS_DOWN as exc:
            log.warning("route.reply_failed", extra={"error": str(exc)})

    async def recover(self) -> None:
        """After Redis failed or forgot: take back our leases and refill every device."""
        try:
            await self._directory.renew_all()
        except _REDIS_DOWN as exc:
            log.warning("route.recover_failed", extra={"error": str(exc)})
        for ref in self.users.refs():
            try:
                ref.tell(Resync())
            except (MailboxFull, ActorStopped):
                pass


def _fail(command: ChatCommand, status: Any) -> None:
    if isinstance(command, SendCommand):
        command.reply(SendOutcome.failed(status))


def _outcome_from(reply: envelopes.SendReply) -> SendOutcome:
    status: Any = reply.status
    if reply.message is None:
        return SendOutcome.failed(status)
    return SendOutcome(status, message_from_json(reply.message), reply.message.encode())
