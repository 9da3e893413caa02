"""Sending and reading messages.

Sends go to the chat's actor through placement (local or remote), never straight to storage:
the actor is the only writer of its chat's seq. REST waits for the outcome (`send`); the
WebSocket does not (`submit`: the outcome comes back as a `sent` or `error` frame), so one socket
can have many sends in flight and the chat actor commits them in groups.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from node import errors, tracing
from node.actors.commands import ChatSignalCommand, SendCommand, SendOutcome
from node.cluster.placement import ChatPlacement
from node.domain import Message
from node.media.service import MediaService
from node.services.ratelimit import RateLimiter
from node.storage import Storage


class MessageService:
    def __init__(
        self,
        storage: Storage,
        placement: ChatPlacement,
        limiter: RateLimiter,
        media: MediaService,
        *,
        reply_timeout: float,
    ) -> None:
        self._storage = storage
        self._placement = placement
        self._limiter = limiter
        self._media = media
        self._reply_timeout = reply_timeout

    async def submit(
        self,
        user_id: int,
        chat_id: int,
        client_msg_id: str,
        text: str,
        attachments: list[str],
        reply: Callable[[SendOutcome], None],
    ) -> None:
        """Start a send; `reply` gets its outcome later. Raises RateLimited, UnknownMedia (an
        attachment that is not one of the sender's uploads) or ValidationFailed before anything
        is sent. Attachments travel as the contract's Media objects, resolved here once."""
        if not self._limiter.allow(user_id):
            raise errors.RateLimited()
        media = await self._media.resolve(user_id, attachments)
        await self._placement.route(
            SendCommand(chat_id, user_id, client_msg_id, text, media, reply, tracing.carrier())
        )

    async def send(
        self, user_id: int, chat_id: int, client_msg_id: str, text: str, attachments: list[str]
    ) -> tuple[Message, bool]:
        """Store a message and wait until it is durable. (message, created): created is False
        for a repeat of the same client_msg_id, which returns the original."""
        future: asyncio.Future[SendOutcome] = asyncio.get_running_loop().create_future()

        def reply(outcome: SendOutcome) -> None:
            if not future.done():
                future.set_result(outcome)

        await self.submit(user_id, chat_id, client_msg_id, text, attachments, reply)
        try:
            outcome = await asyncio.wait_for(future, self._reply_timeout)
        except TimeoutError:
            raise errors.Unavailable("the message could not be confirmed in time") from None
        if not outcome.stored or outcome.message is None:
            raise errors.send_failure(outcome.status)
        return outcome.message, outcome.status == "created"

    async def history(
        self,
        user_id: int,
        chat_id: int,
        *,
        after_seq: int | None,
        before_seq: int | None,
        limit: int,
    ) -> list[Message]:
        if not await self._storage.chats.is_member(chat_id, user_id):
            raise errors.NotMember()
        return await self._storage.messages.page(
            chat_id, after_seq=after_seq, before_seq=before_seq, limit=limit
        )

    async def mark_read(self, user_id: int, device_id: str, chat_id: int, seq: int) -> None:
        """Raise the user's read mark and tell the chat's members (and the user's other
        devices). Refused for a chat the user is not in or a seq past the chat's end."""
        if await self._storage.chats.mark_read(chat_id, user_id, seq) is None:
            if not await self._storage.chats.is_member(chat_id, user_id):
                raise errors.NotMember()
            raise errors.ValidationFailed("seq is past the chat's last message", code="invalid_seq")
        await self._placement.route(ChatSignalCommand(chat_id, user_id, device_id, "read", seq))

    async def typing(self, user_id: int, device_id: str, chat_id: int) -> None:
        """Refused for a chat the user is not in (so nobody can wake any chat's actor)."""
        if not await self._storage.chats.is_member(chat_id, user_id):
            raise errors.NotMember()
        await self._placement.route(ChatSignalCommand(chat_id, user_id, device_id, "typing"))
