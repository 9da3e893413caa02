"""Connected devices on this node: opening and closing device sessions.

The hub creates each session (bumping the device's epoch in PostgreSQL, so an older connection of
the same device anywhere is superseded), attaches it to the user's actor, and on shutdown closes
every socket with 1001 so clients reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSCloseCode, web

from node import errors
from node.actors.base import ActorStopped, MailboxFull
from node.actors.session import DeviceSession, SessionDeps
from node.actors.user import Attach, Detach
from node.cluster.router import Router

log = logging.getLogger(__name__)


class DeviceHub:
    def __init__(self, deps: SessionDeps, router: Router) -> None:
        self._deps = deps
        self._router = router
        self.sessions: set[DeviceSession] = set()
        self._closing = False

    async def open(
        self,
        user_id: int,
        device_id: str,
        ws: web.WebSocketResponse,
        transport: asyncio.BaseTransport | None,
    ) -> DeviceSession:
        if self._closing:
            raise errors.Unavailable("node shutting down")
        session = DeviceSession(user_id, device_id, ws, self._deps, transport)
        session.epoch = await self._deps.storage.cursors.touch_device(user_id, device_id)
        try:
            self._router.user_ref(user_id).tell(Attach(session))
        except (MailboxFull, ActorStopped):
            raise errors.Unavailable("try again") from None
        self.sessions.add(session)
        log.info("device.connected", extra={"user_id": user_id, "device": device_id})
        return session

    def close(self, session: DeviceSession) -> None:
        self.sessions.discard(session)
        session.close(WSCloseCode.GOING_AWAY, "closing")
        ref = self._router.users.get(session.user_id)
        if ref is not None:
            try:
                ref.tell(Detach(session))
            except (MailboxFull, ActorStopped):
                pass
        log.info(
            "device.disconnected", extra={"user_id": session.user_id, "device": session.device_id}
        )

    def close_all(self) -> None:
        """Shutdown: refuse new devices and close every socket with 1001 (going away)."""
        self._closing = True
        for session in list(self.sessions):
            session.close(WSCloseCode.GOING_AWAY, "node shutting down")
