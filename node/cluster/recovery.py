"""After Redis failed or forgot (restarted empty, a Redis Cluster failed over, or this node's
subscription broke): take back this node's leases, restore what else the node keeps in Redis
(`also`: the push flags), and refill every connected device from PostgreSQL, since anything
published meanwhile is gone (Pub/Sub is at-most-once) and presence entries may be lost (each user
re-registers its presence before its sessions read PostgreSQL again)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

from node.actors.local_users import LocalUsers
from node.actors.user import Resync
from node.cluster.connection import REDIS_DOWN
from node.cluster.directory import Directory

log = logging.getLogger(__name__)


class Recovery:
    def __init__(
        self,
        directory: Directory,
        users: LocalUsers,
        *,
        also: Sequence[Callable[[], Awaitable[object]]] = (),
    ) -> None:
        self._directory = directory
        self._users = users
        self._also = also

    async def recover(self) -> None:
        try:
            await self._directory.renew_all()
        except REDIS_DOWN as exc:
            log.warning("recovery.leases_failed", extra={"error": str(exc)})
        for restore in self._also:
            try:
                await restore()
            except Exception as exc:  # best effort: each part has its own periodic repair
                log.warning("recovery.restore_failed", extra={"error": repr(exc)})
        self._users.tell_every(Resync())
        log.info("recovery.resync", extra={"users": len(self._users)})
