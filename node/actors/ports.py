"""The small interfaces the actors need from the world around them, declared on the actors' side.

Dependencies point one way: `node.cluster` (ownership, presence, delivery across nodes) and the
WebSocket edge (`node.http.ws`, device sessions) implement these; the actors never import them.
Every object is complete when constructed: what an actor needs is handed to it, never wired
afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from node import tracing
from node.actors.commands import ChatCommand
from node.frames import EncodedMessage


class ClusterUnreachable(Exception):
    """The cluster's shared state (Redis) cannot be reached now; worth trying again later."""


# --- chat ownership (implemented by node.cluster.directory) -------------------------------------


class HeldElsewhere(Exception):
    """Another live node owns the chat."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class OwnershipUnavailable(ClusterUnreachable):
    """Ownership cannot be decided now (the directory is unreachable)."""


class Claim(Protocol):
    """A chat held by this node. `valid()` turns false once the claim lapsed or was lost; an
    owner stops writing then, even if it was never told."""

    lost: bool

    def valid(self) -> bool: ...


class ChatOwnership(Protocol):
    async def claim(self, chat_id: int, *, on_lost: Callable[[], None]) -> Claim:
        """Hold the chat from now on; `on_lost` runs if another node takes it. Raises
        HeldElsewhere or OwnershipUnavailable."""
        ...

    async def release(self, claim: Claim) -> None: ...


# Where a chat actor returns commands it may no longer handle (the chat moved): routed again.
Handback = Callable[[Sequence[ChatCommand], Exception], None]


# --- delivery (implemented by node.cluster.delivery) --------------------------------------------


class Delivery(Protocol):
    """Frames for users' devices wherever they are connected (this node or others), or for the
    mailboxes of users with no device anywhere."""

    async def messages(
        self, chat_id: int, member_ids: Sequence[int], batch: Sequence[EncodedMessage]
    ) -> None: ...

    async def frame(
        self,
        user_ids: Sequence[int],
        frame: bytes,
        *,
        skip_user: int | None = None,
        skip_device: str | None = None,
    ) -> None: ...

    async def device_taken(self, user_id: int, device_id: str, epoch: int) -> None:
        """A device connected here: close its older connection wherever it is."""
        ...


# --- presence (implemented by node.cluster.presence) --------------------------------------------


class PresenceRegistry(Protocol):
    """Both methods raise ClusterUnreachable when the registry cannot be reached."""

    async def set_devices(self, user_id: int, local_devices: int) -> tuple[int, int]:
        """Record this node's device count for the user; (total before, total after)."""
        ...

    async def online_among(self, user_ids: Sequence[int]) -> list[int]: ...


class PresenceFeed(Protocol):
    """Where user actors report presence transitions (implemented by
    node.cluster.presence_fanout): told to watchers in periodic batches."""

    def changed(self, user_id: int, online: bool) -> None:
        """Returns at once; the change goes out with the next batch."""
        ...

    async def online_contacts(self, user_id: int) -> list[int]:
        """Who is online now among the users sharing a small chat with `user_id` (the snapshot
        for a new connection). Raises when the store or the registry cannot answer."""
        ...


# --- a connected device, as its user actor sees it (implemented by node.http.ws.session) ---


@dataclass(slots=True, frozen=True)
class BatchMeta:
    """Where a live batch came from: its commit time (wall clock) and trace context."""

    committed_at: float
    trace: tracing.Carrier


class DeviceOutlet(Protocol):
    """One connected device. Every method returns at once: it only queues (bounded) for the
    device's own writer."""

    @property
    def device_id(self) -> str: ...

    @property
    def epoch(self) -> int: ...

    def offer_messages(
        self, chat_id: int, entries: Sequence[tuple[int, bytes]], meta: BatchMeta | None = None
    ) -> None: ...

    def offer_frame(self, frame: bytes) -> None: ...

    def request_resync(self) -> None: ...

    def close(self, code: int, reason: str) -> None: ...
