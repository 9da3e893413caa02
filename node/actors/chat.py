"""The chat actor: the only writer of its chat's seq, with group commit.

It starts by claiming the chat (a lease in the cluster's directory) and bumping the chat's fencing
epoch in PostgreSQL (both batched with every other chat starting meanwhile: one Redis call and
one pair of statements for many chats, `Directory` and `ChatActivations`);
every batch it stores carries that epoch, so if another node took the chat
over (this one paused or cut off) the database refuses the write and this actor stops and hands
what it held back to be routed to the new owner.

Each batch is everything waiting in the mailbox (up to `batch_size`), stored through the node's
group-commit pipeline: gap-free seqs for the new messages, repeats of (sender, client_msg_id)
answered with the original, non-members refused. After the commit each new message is encoded once
and handed to delivery for every member; then each sender gets its outcome. Typing and read
signals go to the members without storing anything.

Every send this actor takes is answered, whatever happens: `sent` (created or duplicate) or a
failure status. The pipeline answers within its commit timeout, so a sender never waits longer
than that for an answer from here.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from node import frames, metrics, tracing
from node.actors.commands import (
    ChatCommand,
    ChatSignalCommand,
    SendCommand,
    SendOutcome,
    fail_sends,
)
from node.actors.ports import (
    ChatOwnership,
    Claim,
    Delivery,
    Handback,
    HeldElsewhere,
    OwnershipUnavailable,
)
from node.actors.runtime import Actor, StopActor
from node.batching import BatcherClosed
from node.domain import SendStatus
from node.storage import DATABASE_ERRORS, ChatMissing, Fenced, NewMessage, Storage, StoreUnavailable
from node.storage.group_commit import CommitPipeline

log = logging.getLogger(__name__)

_ACTIVATION_FAILED: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, BatcherClosed)


class ChatMoved(StopActor):
    """Another node owns the chat (now): what this actor holds goes there."""


class ChatGone(StopActor):
    """The chat does not exist."""


class ChatUnavailable(StopActor):
    """The directory or the database cannot be reached: fail what is held."""


class ChatActor(Actor[ChatCommand]):
    batch_size = 256

    def __init__(
        self,
        chat_id: int,
        *,
        storage: Storage,
        committer: CommitPipeline,
        ownership: ChatOwnership,
        delivery: Delivery,
        handback: Handback,
        node: str,
        mailbox_size: int,
        idle_timeout: float,
    ) -> None:
        self.chat_id = chat_id
        self._node = node  # this node's incarnation, for traces
        self.mailbox_size = mailbox_size
        self.idle_timeout = idle_timeout
        self._storage = storage
        self._committer = committer
        self._ownership = ownership
        self._delivery = delivery
        self._handback = handback
        self._claim: Claim | None = None
        self._epoch = 0
        self._members: list[int] = []
        self._joined: dict[int, int] = {}  # member -> joined_seq
        self._members_version = -1

    async def on_start(self) -> None:
        try:
            self._claim = await self._ownership.claim(self.chat_id, on_lost=self.ref.request_stop)
        except HeldElsewhere as exc:
            raise ChatMoved(f"chat {self.chat_id} is owned by {exc.holder}") from None
        except OwnershipUnavailable as exc:
            raise ChatUnavailable(f"directory unavailable: {exc}") from None
        try:
            async with asyncio.timeout(self._committer.timeout):  # sends wait in the mailbox
                # batched with every other chat starting meanwhile (`ChatActivations`)
                activation = await self._storage.activations.activate(self.chat_id)
        except _ACTIVATION_FAILED as exc:
            await self._ownership.release(self._claim)
            raise ChatUnavailable(f"database unavailable: {exc!r}") from None
        if activation is None:
            await self._ownership.release(self._claim)
            raise ChatGone(f"chat {self.chat_id} does not exist")
        epoch = self._epoch = activation.epoch
        self._members_version, self._joined = activation.members_version, activation.joined
        self._members = list(self._joined)
        metrics.OWNERSHIP_CHANGES.labels(change="taken").inc()
        log.info("chat.activated", extra={"chat_id": self.chat_id, "epoch": epoch})

    async def on_stop(self) -> None:
        if self._claim is not None and not self._claim.lost:
            await self._ownership.release(self._claim)

    def undeliverable(self, messages: list[Any], reason: Exception) -> None:
        """Commands this actor took or held but will not handle: to the chat's new owner when it
        moved, else answered with a failure (a client retries with the same client_msg_id)."""
        commands: list[ChatCommand] = [
            m for m in messages if isinstance(m, SendCommand | ChatSignalCommand)
        ]
        if isinstance(reason, ChatMoved):
            self._handback(commands, reason)
            return
        status: SendStatus = "failed"
        if isinstance(reason, ChatGone):
            status = "not_member"
        elif isinstance(reason, ChatUnavailable):
            status = "unavailable"
        fail_sends(commands, status)
        super().undeliverable([m for m in messages if m not in commands], reason)

    async def receive_batch(self, messages: list[ChatCommand]) -> None:
        sends = [m for m in messages if isinstance(m, SendCommand)]
        try:
            if sends:
                await self._commit(sends)
            for message in messages:
                if isinstance(message, ChatSignalCommand):
                    await self._signal(message)
        except ChatMoved:
            raise  # its sends were handed back
        except BaseException:
            fail_sends(sends, "failed")  # those not answered yet; then the runtime decides
            raise

    async def _commit(self, sends: list[SendCommand]) -> None:
        with tracing.span(
            "chat.commit",
            parent=sends[0].trace,
            links=[s.trace for s in sends[1:]],
            chat_id=self.chat_id,
            batch=len(sends),
            node=self._node,
        ):
            await self._commit_batch(sends)

    async def _commit_batch(self, sends: list[SendCommand]) -> None:
        if self._claim is None or not self._claim.valid():
            self._hand_over(sends, "lease expired")
        first: dict[tuple[int, str], int] = {}
        batch: list[NewMessage] = []
        for command in sends:
            key = (command.sender_id, command.client_msg_id)
            if key not in first:
                first[key] = len(batch)
                batch.append(
                    NewMessage(
                        command.sender_id, command.client_msg_id, command.text, command.attachments
                    )
                )
        try:
            results = await self._committer.commit(self.chat_id, self._epoch, batch)
        except Fenced:
            metrics.OWNERSHIP_CHANGES.labels(change="fenced").inc()
            log.warning("chat.fenced", extra={"chat_id": self.chat_id, "epoch": self._epoch})
            self._hand_over(sends, "fenced")
        except ChatMissing:
            fail_sends(sends, "not_member")
            raise ChatGone("chat deleted") from None
        except StoreUnavailable as exc:
            metrics.POSTGRES_ERRORS.labels(op="store").inc()
            log.warning("chat.store_failed", extra={"chat_id": self.chat_id, "error": str(exc)})
            fail_sends(sends, "unavailable")
            return
        created = [
            frames.EncodedMessage.of(r.message)
            for r in results
            if r.status == "created" and r.message
        ]
        stored = [r for r in results if r.message is not None]
        if stored and stored[0].members_version != self._members_version:
            await self._load_members()
        outcomes: list[SendOutcome] = []
        by_id = {e.message.id: e for e in created}
        for result in results:
            if result.message is None:
                outcomes.append(SendOutcome.failed(result.status))
                continue
            encoded = by_id.get(result.message.id) or frames.EncodedMessage.of(result.message)
            outcomes.append(SendOutcome(result.status, result.message, encoded.json))
        if created:
            metrics.MESSAGES_ACCEPTED.inc(len(created))
            await self._delivery.messages(self.chat_id, self._recipients(created), created)
        replied: set[tuple[int, str]] = set()
        for command in sends:
            key = (command.sender_id, command.client_msg_id)
            outcome = outcomes[first[key]]
            if key in replied and outcome.status == "created":  # a repeat within the batch
                outcome = SendOutcome("duplicate", outcome.message, outcome.message_json)
            replied.add(key)
            command.answer(outcome)

    def _hand_over(self, commands: list[SendCommand], why: str) -> None:
        """This node may no longer write the chat: stop, and hand the rest back for routing."""
        if self._claim is not None:
            self._claim.lost = True
        reason = ChatMoved(why)
        self._handback(list(commands), reason)
        raise reason

    async def _load_members(self) -> None:
        self._members_version, self._joined = await self._storage.chats.members_joined(self.chat_id)
        self._members = list(self._joined)

    def _recipients(self, batch: list[frames.EncodedMessage]) -> list[int]:
        """The members who receive `batch`: those who joined before its first message. (Members
        are loaded after the commit: one added meanwhile joined at or above the batch's seqs and
        must not get it. Nobody joins inside a batch: joining locks the chat row the commit
        holds.)"""
        first = min(encoded.message.seq for encoded in batch)
        if all(joined < first for joined in self._joined.values()):
            return self._members
        return [member for member, joined in self._joined.items() if joined < first]

    async def _signal(self, signal: ChatSignalCommand) -> None:
        if signal.user_id not in self._members:
            return
        if signal.signal == "typing":
            others = [m for m in self._members if m != signal.user_id]
            await self._delivery.frame(others, frames.typing_frame(self.chat_id, signal.user_id))
        else:
            frame = frames.read_frame(self.chat_id, signal.user_id, signal.seq)
            await self._delivery.frame(
                self._members, frame, skip_user=signal.user_id, skip_device=signal.device_id
            )
