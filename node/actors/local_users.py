"""This node's users: their actors, and their connected devices for live delivery.

A user actor exists while the user has a device connected here; `ensure` starts it when a device
connects. Telling never blocks: a user whose mailbox is full is overloaded, so its actor is
stopped — its sessions close and the devices reconnect and resume from their cursors — rather
than buffering without bound.

Live batches of stored messages skip the user actors: `deliver` hands them straight to every
attached device (`attach`/`detach`, kept by the WebSocket edge as sockets open and close), each
of which writes them at once or queues them in its own bounded outbox. One batch, encoded once,
is offered to every device in turn, in the order batches are delivered: per chat that is seq
order, since one chat actor delivers its batches one after another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from node import metrics
from node.actors.ports import DeviceOutlet, LiveBatch
from node.actors.runtime import ActorRef, ActorRegistry, ActorStopped, MailboxFull
from node.actors.user import UserActor, UserMessage

log = logging.getLogger(__name__)

_LIVE = metrics.MESSAGES_DELIVERED.labels(path="live")


class LocalUsers:
    def __init__(self, registry: ActorRegistry) -> None:
        self._registry = registry
        # user -> the outlet of its one device here, or a list when it has several
        self._devices: dict[int, DeviceOutlet | list[DeviceOutlet]] = {}

    def attach(self, user_id: int, outlet: DeviceOutlet) -> None:
        """A device of the user connected here: live batches go to it from now on."""
        held = self._devices.get(user_id)
        if held is None:
            self._devices[user_id] = outlet
        elif isinstance(held, list):
            held.append(outlet)
        else:
            self._devices[user_id] = [held, outlet]

    def detach(self, user_id: int, outlet: DeviceOutlet) -> None:
        held = self._devices.get(user_id)
        if held is outlet:
            del self._devices[user_id]
        elif isinstance(held, list) and outlet in held:
            held.remove(outlet)
            if len(held) == 1:
                self._devices[user_id] = held[0]

    def devices(self, user_id: int) -> list[DeviceOutlet]:
        held = self._devices.get(user_id)
        if held is None:
            return []
        return list(held) if isinstance(held, list) else [held]

    def offer_frame(
        self,
        user_ids: Iterable[int],
        frame: bytes,
        *,
        skip_user: int | None = None,
        skip_device: str | None = None,
    ) -> None:
        """An ephemeral frame to every device of these users attached here (but `skip_device`
        of `skip_user`); never blocks."""
        devices = self._devices
        for user_id in user_ids:
            held = devices.get(user_id)
            if held is None:
                continue
            skip = skip_device if user_id == skip_user else None
            for outlet in held if isinstance(held, list) else (held,):
                if skip is None or outlet.device_id != skip:
                    outlet.offer_frame(frame)

    def deliver(self, user_ids: Iterable[int], batch: LiveBatch) -> int:
        """A live batch to every device of these users attached here; never blocks. Returns the
        frames written at once (metrics are counted here, once per batch)."""
        devices = self._devices
        written = 0
        for user_id in user_ids:
            held = devices.get(user_id)
            if held is None:
                continue
            if isinstance(held, list):
                for outlet in held:
                    written += outlet.offer_batch(batch)
            else:
                written += held.offer_batch(batch)
        if written:
            _LIVE.inc(written)
            if batch.meta is not None:
                metrics.DELIVERY_LATENCY.observe(max(0.0, time.time() - batch.meta.committed_at))
        return written

    def __len__(self) -> int:
        return len(self._registry)

    def refs(self) -> list[ActorRef[Any]]:
        return self._registry.refs()

    def ensure(self, user_id: int, make: Callable[[int], UserActor]) -> ActorRef[UserMessage]:
        """The user's actor, started with `make` if there is none."""
        ref: ActorRef[UserMessage] | None = self._registry.get(user_id)
        if ref is None:
            ref = self._registry.spawn(user_id, make(user_id))
        return ref

    def tell(self, user_id: int, message: UserMessage) -> None:
        """To the user's actor, if the user has one here; never blocks, never raises."""
        ref = self._registry.get(user_id)
        if ref is None:
            return
        try:
            ref.tell(message)
        except MailboxFull:
            log.warning("users.overloaded", extra={"user_id": user_id})
            ref.request_stop()
        except ActorStopped:
            pass

    def tell_every(self, message: UserMessage) -> None:
        """To every user actor of this node."""
        for ref in self._registry.refs():
            try:
                ref.tell(message)
            except (MailboxFull, ActorStopped):
                pass
