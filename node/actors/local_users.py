"""This node's user actors, as the rest of the node reaches them.

A user actor exists while the user has a device connected here; `ensure` starts it when a device
connects. Telling never blocks: a user whose mailbox is full is overloaded (its devices cannot keep
up), so its actor is stopped — its sessions close and the devices reconnect and resume from their
cursors — rather than buffering without bound.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from node.actors.runtime import ActorRef, ActorRegistry, ActorStopped, MailboxFull
from node.actors.user import UserActor, UserMessage

log = logging.getLogger(__name__)


class LocalUsers:
    def __init__(self, registry: ActorRegistry) -> None:
        self._registry = registry

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

    def tell_all(self, user_ids: Iterable[int], message: UserMessage) -> None:
        for user_id in user_ids:
            self.tell(user_id, message)

    def tell_every(self, message: UserMessage) -> None:
        """To every user actor of this node."""
        for ref in self._registry.refs():
            try:
                ref.tell(message)
            except (MailboxFull, ActorStopped):
                pass
