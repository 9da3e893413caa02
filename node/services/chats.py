"""Creating chats and changing their members.

Visibility rule: whoever is not a member of a chat gets 404 `not_member` for it, exactly as for a
chat that does not exist, so ids cannot be probed. Only then come the permission checks (403).

Membership changes are made by `ChatStore` under a lock on the chat row and bump its
`members_version`; the chat's actor notices at its next write (see `node.storage.chats`).
"""

from __future__ import annotations

import logging

from node import errors
from node.domain import ChatView
from node.storage import Storage, UnknownUser

log = logging.getLogger(__name__)


def _no_chat() -> errors.NotMember:
    return errors.NotMember()


class ChatService:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def create_direct(self, user_id: int, peer_id: int) -> tuple[ChatView, bool]:
        """The direct chat of the pair, with members; True when created by this call (at most
        one direct chat exists per pair, also under concurrent calls). A chat with yourself is
        422; an unknown peer is 404."""
        if peer_id == user_id:
            raise errors.ValidationFailed("a direct chat needs another user")
        try:
            chat, created = await self._storage.chats.create_direct(user_id, peer_id)
        except UnknownUser:
            raise errors.NotFound("no such user") from None
        if created:
            log.info(
                "chat.created", extra={"chat_id": chat.id, "user_id": user_id, "kind": "direct"}
            )
        return await self._view(chat.id, user_id), created

    async def create_group(self, owner_id: int, title: str, member_ids: list[int]) -> ChatView:
        """A new group owned by `owner_id`, who is a member whether listed or not; duplicates in
        `member_ids` count once. Any unknown member: 404 and nothing is created."""
        try:
            chat = await self._storage.chats.create_group(owner_id, title, member_ids)
        except UnknownUser:
            raise errors.NotFound("no such user") from None
        log.info("chat.created", extra={"chat_id": chat.id, "user_id": owner_id, "kind": "group"})
        return await self._view(chat.id, owner_id)

    async def list_for(self, user_id: int) -> list[ChatView]:
        """The user's chats, most recent activity first, without members."""
        return await self._storage.chats.views_for(user_id)

    async def get(self, user_id: int, chat_id: int) -> ChatView:
        """The chat with its members; 404 unless `user_id` is a member."""
        return await self._view(chat_id, user_id)

    async def add_member(self, user_id: int, chat_id: int, member_id: int) -> ChatView:
        """Add `member_id` to a group (owner only: 403 otherwise, and always 403 for a direct
        chat). Adding an existing member changes nothing. The new member receives messages from
        this moment on; older history stays readable over REST."""
        view = await self._storage.chats.view(chat_id, user_id, with_members=False)
        if view is None:
            raise _no_chat()
        if view.chat.kind == "direct":
            raise errors.Forbidden("direct chats have no member changes")
        if view.chat.owner_id != user_id:
            raise errors.Forbidden("only the group's owner can add members")
        try:
            added = await self._storage.chats.add_member(chat_id, member_id)
        except UnknownUser:
            raise errors.NotFound("no such user") from None
        if added:
            log.info("chat.member_added", extra={"chat_id": chat_id, "user_id": member_id})
        return await self._view(chat_id, user_id)

    async def remove_member(self, user_id: int, chat_id: int, member_id: int) -> None:
        """Remove `member_id` from a group: anyone may leave, the owner may remove anyone (an
        owner who leaves hands the group to its longest-standing member). 403 otherwise and for
        direct chats; 404 when `member_id` is not a member."""
        view = await self._storage.chats.view(chat_id, user_id, with_members=False)
        if view is None:
            raise _no_chat()
        if view.chat.kind == "direct":
            raise errors.Forbidden("direct chats have no member changes")
        if member_id != user_id and view.chat.owner_id != user_id:
            raise errors.Forbidden("only the group's owner can remove other members")
        if not await self._storage.chats.remove_member(chat_id, member_id):
            raise errors.NotFound("no such member")
        log.info(
            "chat.member_removed", extra={"chat_id": chat_id, "user_id": member_id, "by": user_id}
        )

    async def _view(self, chat_id: int, user_id: int) -> ChatView:
        view = await self._storage.chats.view(chat_id, user_id, with_members=True)
        if view is None:
            raise _no_chat()
        return view
