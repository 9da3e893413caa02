"""After Redis failed or forgot (restarted empty, or this node's subscription broke): take back
this node's leases and refill every connected device from PostgreSQL, since anything published
meanwhile is gone (Pub/Sub is at-most-once) and presence entries may be lost."""

from __future__ import annotations

import logging

from node.actors.local_users import LocalUsers
from node.actors.user import Resync
from node.cluster.connection import REDIS_DOWN
from node.cluster.directory import Directory

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, directory: Directory, users: LocalUsers) -> None:
        self._directory = directory
        self._users = users

    async def recover(self) -> None:
        try:
            await self._directory.renew_all()
        except REDIS_DOWN as exc:
            log.warning("recovery.leases_failed", extra={"error": str(exc)})
        self._users.tell_every(Resync())
        log.info("recovery.resync", extra={"users": len(self._users)})
