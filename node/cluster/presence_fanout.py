"""Presence changes told to watchers in periodic batches, and snapshots for new connections.

User actors report their transitions (`changed`, never blocking); every `interval` seconds the
announcer sends what changed since the last tick:

- the last state wins within a tick: a user who came online and went offline again (or the
  reverse) in one interval is announced once, with its latest state. Never dropped as "no
  change": a watcher connecting in between may have learnt the first state from its snapshot;
- watchers are the users sharing a chat of at most `group_limit` members with a changed user
  (one SQL query per tick for all changed users); members of bigger chats are not told each
  other's presence (a client asks with `presence_query`);
- each watcher with a device here gets one `presence` frame per tick (single-user shape for one
  change, a `users` list for several); every other node holding a watcher gets one
  `PresenceBatch` envelope per tick, through `Outbound`.

So a device receives at most one presence frame per interval, however many of its contacts
change, and a node sends one envelope per interval, however many users change.

`online_contacts` (the snapshot a new connection gets) is batched too: the requests waiting when
the snapshot loop wakes are answered by one SQL query and one Redis pipeline together.

Best effort, like presence itself: a tick whose query fails is dropped with a warning (later
transitions are still told; a reconnecting client gets a fresh snapshot).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence

from node import frames
from node.actors.local_users import LocalUsers
from node.actors.ports import PresenceRegistry
from node.actors.user import DeliverFrame
from node.cluster import envelopes
from node.cluster.fanout import FanoutGroup
from node.cluster.identity import NodeIdentity
from node.cluster.outbound import Outbound
from node.storage import ChatStore

log = logging.getLogger(__name__)

_Snapshot = tuple[int, "asyncio.Future[list[int]]"]
# a snapshot late under a connect storm (the store's pool busy) beats none: a contact already
# online would otherwise stay unknown to the new connection until it changes again
_SNAPSHOT_TIMEOUT = 15.0


class PresenceAnnouncer:
    """Implements `node.actors.ports.PresenceFeed`."""

    def __init__(
        self,
        identity: NodeIdentity,
        chats: ChatStore,
        registry: PresenceRegistry,
        users: LocalUsers,
        outbound: Outbound,
        *,
        interval: float,
        group_limit: int,
        max_snapshots: int = 1000,
    ) -> None:
        self._node = identity.incarnation
        self._chats = chats
        self._registry = registry
        self._users = users
        self._outbound = outbound
        self._interval = interval
        self._limit = group_limit
        self._max_snapshots = max_snapshots
        self._pending: dict[int, bool] = {}  # user -> latest state, this tick
        self._snapshots: deque[_Snapshot] = deque()
        self._snapshot_wakeup = asyncio.Event()
        self.ticks = 0  # ticks that sent something (for tests and metrics)

    def changed(self, user_id: int, online: bool) -> None:
        """The user came online or went offline (a transition): told at the next tick."""
        self._pending[user_id] = online

    async def online_contacts(self, user_id: int) -> list[int]:
        """The users online now who share a chat of at most `group_limit` members with
        `user_id`. Raises what the store or the registry raised."""
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._snapshots.append((user_id, future))
        self._snapshot_wakeup.set()
        async with asyncio.timeout(_SNAPSHOT_TIMEOUT):
            return await asyncio.shield(future)

    async def run(self) -> None:
        """Both loops, until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._ticks())
            tasks.create_task(self._snapshot_loop())

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def flush(self) -> None:
        """Tell what changed since the last flush."""
        changes, self._pending = self._pending, {}
        if not changes:
            return
        try:
            pairs = await self._chats.presence_watchers(list(changes), self._limit)
        except Exception as exc:
            log.warning(
                "presence.watchers_failed", extra={"users": len(changes), "error": repr(exc)}
            )
            return
        order = {uid: i for i, uid in enumerate(changes)}
        told: dict[int, list[int]] = {}
        for subject, watcher in pairs:
            told.setdefault(watcher, []).append(order[subject])
        if not told:
            return
        self.ticks += 1
        batch = list(changes.items())
        watchers = list(told.items())
        tell_watchers(self._users, batch, watchers)
        payload = envelopes.encode(
            envelopes.PresenceBatch(origin=self._node, changes=batch, watchers=watchers)
        )
        await self._outbound.submit(FanoutGroup(list(told), payload))

    async def _snapshot_loop(self) -> None:
        batch: list[_Snapshot] = []
        try:
            while True:
                while not self._snapshots:
                    self._snapshot_wakeup.clear()
                    await self._snapshot_wakeup.wait()
                count = min(len(self._snapshots), self._max_snapshots)
                batch = [self._snapshots.popleft() for _ in range(count)]
                try:
                    answers = await self._online_contacts_of([uid for uid, _ in batch])
                except Exception as exc:
                    _fail(batch, exc)
                else:
                    for uid, future in batch:
                        if not future.done():
                            future.set_result(answers.get(uid, []))
                batch = []
        finally:
            stopped = RuntimeError("presence snapshots stopped")
            _fail(batch, stopped)
            _fail(list(self._snapshots), stopped)
            self._snapshots.clear()

    async def _online_contacts_of(self, user_ids: Sequence[int]) -> dict[int, list[int]]:
        pairs = await self._chats.presence_watchers(user_ids, self._limit)
        online = set(await self._registry.online_among(list({w for _, w in pairs})))
        answers: dict[int, list[int]] = {}
        for user, contact in pairs:
            if contact in online:
                answers.setdefault(user, []).append(contact)
        return answers


def tell_watchers(
    users: LocalUsers,
    changes: Sequence[tuple[int, bool]],
    watchers: Sequence[tuple[int, Sequence[int]]],
) -> None:
    """One presence frame to each watcher's devices on this node (watchers without a user actor
    here are skipped): `changes` indexed by each watcher's list."""
    for watcher, indices in watchers:
        frame = frames.presence_batch_frame([changes[i] for i in indices])
        users.tell(watcher, DeliverFrame(frame))


def _fail(requests: Sequence[_Snapshot], exc: Exception) -> None:
    for _, future in requests:
        if not future.done():
            future.set_exception(exc)
            future.exception()
