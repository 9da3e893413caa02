"""The chat actor: the only writer of its chat's seq, with group commit.

It starts by taking the chat's lease in the directory and bumping the chat's fencing epoch in
PostgreSQL; every batch it stores carries that epoch, so if another node took the chat over (this
one paused or cut off) the database refuses the write and this actor stops and re-routes what it
held to the new owner.

Each batch is everything waiting in the mailbox (up to `batch_size`): one transaction assigns
gap-free seqs to the new messages, dedupes by (sender, client_msg_id), and checks membership
(`post_messages`). After the commit each new message is encoded once and handed to the router for
every member; then each sender gets its outcome. Typing and read signals are fanned out to the
members without storing anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import asyncpg
from redis.exceptions import RedisError

from node import frames, metrics, tracing
from node.actors.base import Actor, StopActor
from node.actors.committer import CommitPipeline
from node.cluster import keys
from node.cluster.directory import Directory, HeldElsewhere, Lease
from node.domain import Message
from node.storage import ChatMissing, Fenced, NewMessage, Storage

if TYPE_CHECKING:
    from node.cluster.router import Router

log = logging.getLogger(__name__)

Status = Literal[
    "created", "duplicate", "conflict", "not_member", "not_found", "unavailable", "rate_limited"
]


@dataclass(slots=True, frozen=True)
class SendOutcome:
    status: Status
    message: Message | None = None
    message_json: bytes | None = None  # the Message object, encoded once

    @classmethod
    def failed(cls, status: Status) -> SendOutcome:
        return cls(status)


@dataclass(slots=True)
class SendCommand:
    chat_id: int
    sender_id: int
    client_msg_id: str
    text: str
    attachments: tuple[dict[str, Any], ...]
    reply: Callable[[SendOutcome], None]
    trace: dict[str, str] = field(default_factory=dict)
    hops: int = 0  # times re-routed after an owner change


@dataclass(slots=True)
class ChatSignalCommand:
    chat_id: int
    user_id: int
    device_id: str
    signal: Literal["typing", "read"]
    seq: int = 0
    hops: int = 0


ChatCommand = SendCommand | ChatSignalCommand


class ChatMoved(StopActor):
    """Another node owns the chat (now): what this actor holds goes there."""


class ChatGone(StopActor):
    """The chat does not exist."""


class ChatUnavailable(StopActor):
    """The directory or the database cannot be reached: fail what is held."""


_DB_DOWN = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)


class ChatActor(Actor[ChatCommand]):
    batch_size = 256

    def __init__(
        self,
        chat_id: int,
        *,
        storage: Storage,
        committer: CommitPipeline,
        directory: Directory,
        router: Router,
        mailbox_size: int,
        idle_timeout: float,
    ) -> None:
        self.chat_id = chat_id
        self.mailbox_size = mailbox_size
        self.idle_timeout = idle_timeout
        self._storage = storage
        self._committer = committer
        self._directory = directory
        self._router = router
        self._lease: Lease | None = None
        self._epoch = 0
        self._members: list[int] = []
        self._members_version = -1

    async def on_start(self) -> None:
        try:
            self._lease = await self._directory.acquire(keys.lease("chat", self.chat_id))
        except HeldElsewhere as exc:
            raise ChatMoved(f"chat {self.chat_id} is owned by {exc.holder}") from None
        except (RedisError, OSError) as exc:
            raise ChatUnavailable(f"directory unavailable: {exc}") from None
        try:
            epoch = await self._storage.chats.take_ownership(self.chat_id)
        except (*_DB_DOWN, asyncpg.PostgresError) as exc:
            await self._directory.release(self._lease)
            raise ChatUnavailable(f"database unavailable: {exc!r}") from None
        if epoch is None:
            await self._directory.release(self._lease)
            raise ChatGone(f"chat {self.chat_id} does not exist")
        self._epoch = epoch
        await self._load_members()
        metrics.OWNERSHIP_CHANGES.labels(change="taken").inc()
        log.info("chat.activated", extra={"chat_id": self.chat_id, "epoch": epoch})

    async def on_stop(self) -> None:
        if self._lease is not None and not self._lease.lost:
            await self._directory.release(self._lease)

    def undeliverable(self, messages: list[Any], reason: Exception) -> None:
        """Commands this actor could not take: to the chat's new owner when it moved, else
        failed (a client retries a failed send with the same client_msg_id)."""
        commands = [m for m in messages if isinstance(m, SendCommand | ChatSignalCommand)]
        if isinstance(reason, ChatMoved):
            self._router.reroute(commands, reason)
            return
        outcome = SendOutcome.failed("not_found" if isinstance(reason, ChatGone) else "unavailable")
        self._reply_all([c for c in commands if isinstance(c, SendCommand)], outcome)

    async def receive_batch(self, messages: list[ChatCommand]) -> None:
        sends = [m for m in messages if isinstance(m, SendCommand)]
        if sends:
            await self._commit(sends)
        for message in messages:
            if isinstance(message, ChatSignalCommand):
                await self._signal(message)

    async def _commit(self, sends: list[SendCommand]) -> None:
        with tracing.span(
            "chat.commit",
            parent=sends[0].trace,
            links=[s.trace for s in sends[1:]],
            chat_id=self.chat_id,
            batch=len(sends),
            node=self._router.node,
        ):
            await self._commit_batch(sends)

    async def _commit_batch(self, sends: list[SendCommand]) -> None:
        if self._lease is None or not self._lease.valid():
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
            self._reply_all(sends, SendOutcome.failed("not_found"))
            raise ChatGone("chat deleted") from None
        except _DB_DOWN as exc:
            metrics.POSTGRES_ERRORS.labels(op="store").inc()
            log.warning("chat.store_failed", extra={"chat_id": self.chat_id, "error": repr(exc)})
            self._reply_all(sends, SendOutcome.failed("unavailable"))
            return
        created = [
            frames.EncodedMessage.of(r.message)
            for r in results
            if r.status == "created" and r.message
        ]
        if results and results[0].members_version != self._members_version:
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
            await self._router.deliver(self.chat_id, self._members, created)
        replied: set[tuple[int, str]] = set()
        for command in sends:
            key = (command.sender_id, command.client_msg_id)
            outcome = outcomes[first[key]]
            if key in replied and outcome.status == "created":  # a repeat within the batch
                outcome = SendOutcome("duplicate", outcome.message, outcome.message_json)
            replied.add(key)
            command.reply(outcome)

    def _hand_over(self, commands: list[SendCommand], why: str) -> None:
        """This node may no longer write the chat: stop, and let the rest go to the owner."""
        if self._lease is not None:
            self._lease.lost = True
        reason = ChatMoved(why)
        self._router.reroute(list(commands), reason)
        raise reason

    @staticmethod
    def _reply_all(commands: list[SendCommand], outcome: SendOutcome) -> None:
        for command in commands:
            command.reply(outcome)

    async def _load_members(self) -> None:
        self._members_version, self._members = await self._storage.chats.members(self.chat_id)

    async def _signal(self, signal: ChatSignalCommand) -> None:
        if signal.user_id not in self._members:
            return
        if signal.signal == "typing":
            others = [m for m in self._members if m != signal.user_id]
            await self._router.to_users(others, frames.typing_frame(self.chat_id, signal.user_id))
        else:
            frame = frames.read_frame(self.chat_id, signal.user_id, signal.seq)
            await self._router.to_users(
                self._members, frame, skip_user=signal.user_id, skip_device=signal.device_id
            )
