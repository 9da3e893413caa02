"""Connected devices on this node: opening and closing device sessions.

The hub creates each session (bumping the device's epoch in PostgreSQL, so an older connection of
the same device anywhere is superseded), attaches it to the user's actor (started if needed) and
to the node's live delivery (`LocalUsers.attach`), and
on shutdown closes every socket with 1001 so clients reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import WSCloseCode, web

from node import errors
from node.actors.local_users import LocalUsers
from node.actors.runtime import ActorStopped, MailboxFull
from node.actors.user import Attach, Detach, UserActor
from node.http.ws.session import DeviceSession, SessionDeps

log = logging.getLogger(__name__)


class DeviceHub:
    def __init__(
        self, deps: SessionDeps, users: LocalUsers, user_actor: Callable[[int], UserActor]
    ) -> None:
        self._deps = deps
        self._users = users
        self._user_actor = user_actor
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
        session.epoch = await self._deps.sync.connected(user_id, device_id)
        try:
            self._users.ensure(user_id, self._user_actor).tell(Attach(session))
        except (MailboxFull, ActorStopped):
            raise errors.Unavailable("try again") from None
        self._users.attach(user_id, session)
        self.sessions.add(session)
        log.info("device.connected", extra={"user_id": user_id, "device": device_id})
        return session

    def close(self, session: DeviceSession) -> None:
        self.sessions.discard(session)
        self._users.detach(session.user_id, session)
        session.close(WSCloseCode.GOING_AWAY, "closing")
        self._users.tell(session.user_id, Detach(session))
        log.info(
            "device.disconnected", extra={"user_id": session.user_id, "device": session.device_id}
        )

    def close_all(self) -> None:
        """Shutdown: refuse new devices and close every socket with 1001 (going away)."""
        self._closing = True
        for session in list(self.sessions):
            session.close(WSCloseCode.GOING_AWAY, "node shutting down")
