"""The one place that decides local or remote for a chat.

A command for a chat goes to this node's chat actor when there is one, or when the chat's lease is
free (or ours, or its holder is dead) — then an actor is started here and claims the lease; else
it is forwarded to the owner (`Forwarder`). The owner is looked up in this node's memory of remote
owners (`RemoteOwners`, see there for when an entry is dropped), else in the directory (one
batched Redis read for every look-up meanwhile); a command another node forwarded here is always
looked up in the directory, so one forwarded on a stale memory reaches the current owner.
Commands a chat actor hands back (it lost the chat, or
stopped while holding them) are routed again by `run`, at most `_MAX_HOPS` times each.

Every send that cannot be placed is answered at once: `unavailable` when the directory cannot be
asked or the node is stopping, `rate_limited` when the chat's mailbox is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence

from node.actors.chat import ChatActor
from node.actors.commands import ChatCommand, fail_sends
from node.actors.ports import Handback, OwnershipUnavailable
from node.actors.runtime import ActorRef, ActorRegistry, ActorStopped, MailboxFull
from node.cluster.connection import REDIS_DOWN
from node.cluster.directory import Directory
from node.cluster.forwarding import Forwarder
from node.cluster.identity import NodeIdentity
from node.cluster.owners import RemoteOwners

log = logging.getLogger(__name__)

_UNRESOLVED: tuple[type[BaseException], ...] = (*REDIS_DOWN, OwnershipUnavailable)
_MAX_HOPS = 3

ChatActorFactory = Callable[[int, Handback], ChatActor]


class ChatPlacement:
    def __init__(
        self,
        identity: NodeIdentity,
        *,
        directory: Directory,
        chats: ActorRegistry,
        owners: RemoteOwners,
        forwarder: Forwarder,
        chat_actor: ChatActorFactory,
    ) -> None:
        self._node = identity.incarnation
        self._directory = directory
        self._chats = chats
        self._owners = owners
        self._forwarder = forwarder
        self._chat_actor = chat_actor
        self._handed_back: deque[ChatCommand] = deque()
        self._wakeup = asyncio.Event()

    async def route(
        self, command: ChatCommand, *, attempts: int = 2, from_peer: bool = False
    ) -> None:
        """Hand a command to its chat's owner, here or elsewhere. A send's outcome comes back
        through `command.answer`. `from_peer`: another node forwarded it here, maybe on a stale
        memory of the owner: look the owner up in the directory, not in this node's memory
        (`RemoteOwners`), so a command never bounces between two stale memories."""
        for _ in range(attempts):
            try:
                target = await self._resolve(command.chat_id, from_peer=from_peer)
            except _UNRESOLVED as exc:
                log.warning("route.directory_unavailable", extra={"error": str(exc)})
                fail_sends([command], "unavailable")
                return
            except ActorStopped:  # the node is shutting down: no new chat actors
                fail_sends([command], "unavailable")
                return
            if isinstance(target, str):
                if from_peer:  # forwarded here on a stale memory: on to the current owner
                    log.info(
                        "route.forwarded_again", extra={"chat_id": command.chat_id, "to": target}
                    )
                await self._forwarder.forward(target, command)
                return
            try:
                target.tell(command)
                return
            except MailboxFull:
                fail_sends([command], "rate_limited")
                return
            except ActorStopped:
                continue  # it was stopping: resolve again
        fail_sends([command], "unavailable")

    async def _resolve(self, chat_id: int, *, from_peer: bool) -> ActorRef[ChatCommand] | str:
        ref: ActorRef[ChatCommand] | None = self._chats.get(chat_id)
        if ref is not None:
            return ref
        cached = None if from_peer else self._owners.get(chat_id)
        if cached is not None:
            return cached
        owner = await self._directory.owner(chat_id)  # batched with other look-ups meanwhile
        ref = self._chats.get(chat_id)  # someone may have started it while we awaited
        if ref is not None:
            return ref
        if owner is None or owner == self._node:
            self._owners.forget(chat_id)
            return self._chats.spawn(chat_id, self._chat_actor(chat_id, self.hand_back))
        self._owners.remember(chat_id, owner)
        return owner

    def hand_back(self, commands: Sequence[ChatCommand], reason: Exception) -> None:
        """Commands a chat actor gave back (it stopped, or lost the chat): queued to be routed
        again by `run` (never blocks the actor)."""
        if not commands:
            return
        for command in commands:
            self._owners.forget(command.chat_id)
        log.info("route.handed_back", extra={"count": len(commands), "reason": str(reason)})
        self._handed_back.extend(commands)
        self._wakeup.set()

    async def run(self) -> None:
        """Route handed-back commands again, until cancelled."""
        while True:
            while not self._handed_back:
                self._wakeup.clear()
                await self._wakeup.wait()
            command = self._handed_back.popleft()
            command.hops += 1
            if command.hops > _MAX_HOPS:
                fail_sends([command], "unavailable")
            else:
                await self.route(command, attempts=1)

    def fail_all(self) -> None:
        """Shutdown: answer the sends still waiting to be routed again."""
        while self._handed_back:
            fail_sends([self._handed_back.popleft()], "unavailable")
