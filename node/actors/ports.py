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
from node.frames import EncodedMessage, ws_text


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


@dataclass(slots=True, frozen=True)
class LiveBatch:
    """Stored messages of one chat on their way to live devices, encoded once for all of them:
    `frames[i]` is the `message` frame of seq `seqs[i]` (ascending), `wire` every frame as the
    WebSocket bytes a server writes, back to back. `contiguous`: the seqs have no holes, so a
    device that has everything up to `seqs[0] - 1` can take `wire` as it is."""

    chat_id: int
    seqs: tuple[int, ...]
    frames: tuple[bytes, ...]
    wires: tuple[bytes, ...]
    wire: bytes
    contiguous: bool
    meta: BatchMeta | None = None

    @classmethod
    def of(
        cls, chat_id: int, entries: Sequence[tuple[int, bytes]], meta: BatchMeta | None = None
    ) -> LiveBatch:
        ordered = sorted(entries)
        seqs = tuple(seq for seq, _ in ordered)
        payloads = tuple(frame for _, frame in ordered)
        wires = tuple(ws_text(frame) for frame in payloads)
        contiguous = not seqs or seqs[-1] - seqs[0] == len(seqs) - 1
        return cls(chat_id, seqs, payloads, wires, b"".join(wires), contiguous, meta)


class DeviceOutlet(Protocol):
    """One connected device. Every method returns at once: it writes to the socket when that
    needs no waiting and keeps order, else queues (bounded) for the device's writer."""

    @property
    def device_id(self) -> str: ...

    @property
    def epoch(self) -> int: ...

    def offer_batch(self, batch: LiveBatch) -> int:
        """Hand over a chat's live batch; returns how many of its frames were written to the
        socket at once (the rest, if any, are queued for the device's writer)."""
        ...

    def offer_frame(self, frame: bytes) -> None: ...

    def request_resync(self) -> None: ...

    def close(self, code: int, reason: str) -> None: ...
