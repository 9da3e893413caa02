"""The user actor: this node's devices of one user.

It exists while the user has a device connected here (and a little longer while an offline
announcement is pending). It hands each ephemeral frame to every device's outbox (never
blocking; stored messages go to the devices without this hop, `LocalUsers.deliver`), keeps
the user's presence entry for this node in the cluster, announces online/offline transitions to
the user's contacts, and closes a device's connection when the same device connects again (here
or elsewhere). Devices are `DeviceOutlet`s: the WebSocket edge implements them.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from node import frames
from node.actors.ports import (
    ClusterUnreachable,
    Delivery,
    DeviceOutlet,
    PresenceFeed,
    PresenceRegistry,
)
from node.actors.runtime import Actor, ActorRef

log = logging.getLogger(__name__)

DEVICE_REPLACED = 4001  # close code: the same device connected again
GOING_AWAY = 1001  # close code: the node is shutting down


@dataclass(slots=True, frozen=True)
class Attach:
    session: DeviceOutlet


@dataclass(slots=True, frozen=True)
class Detach:
    session: DeviceOutlet


@dataclass(slots=True, frozen=True)
class DeliverFrame:
    """A presence frame: through the actor, so it is written after the snapshot of a device
    that is still attaching."""

    frame: bytes


@dataclass(slots=True, frozen=True)
class DeviceTakenOver:
    device_id: str
    epoch: int


@dataclass(slots=True, frozen=True)
class Resync:
    """Redis came back (or forgot): re-register presence and refill every session."""


@dataclass(slots=True, frozen=True)
class CheckOffline:
    pass


UserMessage = Attach | Detach | DeliverFrame | DeviceTakenOver | Resync | CheckOffline


class UserActor(Actor[UserMessage]):
    __slots__ = (
        "_announced_online",
        "_delivery",
        "_feed",
        "_grace",
        "_offline_timer",
        "_presence",
        "idle_timeout",
        "mailbox_size",
        "sessions",
        "user_id",
    )  # one per user with a device here: kept small

    task_when_idle = False  # most users are idle most of the time: no task meanwhile

    def __init__(
        self,
        user_id: int,
        *,
        presence: PresenceRegistry,
        feed: PresenceFeed,
        delivery: Delivery,
        mailbox_size: int,
        idle_timeout: float,
        presence_grace: float,
    ) -> None:
        self.user_id = user_id
        self.mailbox_size = mailbox_size
        self.idle_timeout = idle_timeout
        self._presence = presence
        self._feed = feed
        self._delivery = delivery
        self._grace = presence_grace
        self.sessions: dict[str, DeviceOutlet] = {}
        self._announced_online = False
        self._offline_timer: asyncio.TimerHandle | None = None

    def may_passivate(self) -> bool:
        return not self.sessions and not self._announced_online

    async def on_stop(self) -> None:
        if self._offline_timer is not None:
            self._offline_timer.cancel()
        for session in self.sessions.values():
            session.close(GOING_AWAY, "node shutting down")

    async def receive(self, message: UserMessage) -> None:
        if isinstance(message, DeliverFrame):
            for session in self.sessions.values():
                session.offer_frame(message.frame)
        elif isinstance(message, Attach):
            await self._attach(message.session)
        elif isinstance(message, Detach):
            if self.sessions.get(message.session.device_id) is message.session:
                del self.sessions[message.session.device_id]
                await self._update_presence()
        elif isinstance(message, DeviceTakenOver):
            older = self.sessions.get(message.device_id)
            if older is not None and older.epoch < message.epoch:
                older.close(DEVICE_REPLACED, "this device connected again")
        elif isinstance(message, Resync):
            # presence first: what is committed after a session re-reads PostgreSQL must be
            # published to this node, not appended to a mailbox as if the user were away
            await self._update_presence()
            for session in self.sessions.values():
                session.request_resync()
        elif isinstance(message, CheckOffline):
            self._offline_timer = None
            await self._check_offline()

    async def _attach(self, session: DeviceOutlet) -> None:
        previous = self.sessions.get(session.device_id)
        if previous is not None:
            previous.close(DEVICE_REPLACED, "this device connected again")
        self.sessions[session.device_id] = session
        await self._delivery.device_taken(self.user_id, session.device_id, session.epoch)
        await self._update_presence()
        await self._send_contacts_presence(session)

    async def _update_presence(self) -> None:
        """Tell Redis how many devices the user has here; announce transitions."""
        try:
            before, after = await self._presence.set_devices(self.user_id, len(self.sessions))
        except ClusterUnreachable as exc:  # presence is best effort
            log.warning(
                "presence.update_failed", extra={"user_id": self.user_id, "error": str(exc)}
            )
            return
        if after > 0 and self._offline_timer is not None:
            self._offline_timer.cancel()
            self._offline_timer = None
        if after > 0 and (before == 0 or not self._announced_online) and self.sessions:
            self._announced_online = True
            await self._announce(online=True)
        elif after == 0 and self._announced_online and self._offline_timer is None:
            ref = self.ref
            self._offline_timer = asyncio.get_running_loop().call_later(
                self._grace, _tell_quietly, ref, CheckOffline()
            )

    async def _check_offline(self) -> None:
        if self.sessions:
            return
        try:
            _, after = await self._presence.set_devices(self.user_id, 0)
        except ClusterUnreachable:
            after = 0  # cannot tell: say offline rather than stay online forever
        if after == 0:
            self._announced_online = False
            await self._announce(online=False)

    async def _announce(self, *, online: bool) -> None:
        """A transition: told to the user's contacts with the next presence batch."""
        self._feed.changed(self.user_id, online)

    async def _send_contacts_presence(self, session: DeviceOutlet) -> None:
        """A new connection learns which of its contacts (in chats small enough for presence)
        are online now: one frame, whatever their number."""
        try:
            online = await self._feed.online_contacts(self.user_id)
        except Exception as exc:
            log.warning(
                "presence.snapshot_failed", extra={"user_id": self.user_id, "error": repr(exc)}
            )
            return
        if online:
            session.offer_frame(frames.presence_batch_frame([(uid, True) for uid in online]))


def _tell_quietly(ref: ActorRef[UserMessage], message: UserMessage) -> None:
    try:
        ref.tell(message)
    except Exception:
        pass
