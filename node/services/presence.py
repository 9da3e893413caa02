"""Presence on request (`presence_query`): what a client asks about the users it shows, for
members of chats too big for presence to be pushed (see `node.cluster.presence_fanout`)."""

from __future__ import annotations

from collections.abc import Sequence

from node import errors
from node.actors.ports import ClusterUnreachable, PresenceRegistry
from node.storage import Storage

MAX_QUERY_IDS = 200


class PresenceService:
    def __init__(self, storage: Storage, registry: PresenceRegistry) -> None:
        self._storage = storage
        self._registry = registry

    async def query(self, user_id: int, user_ids: Sequence[int]) -> list[tuple[int, bool]]:
        """(user, online) for each distinct id asked, in the order asked. Users who share no
        chat with `user_id` (or do not exist) are reported offline: presence is never told
        to strangers. 1 to `MAX_QUERY_IDS` ids (validation_error otherwise); unavailable when
        the registry cannot be reached."""
        ids = list(dict.fromkeys(user_ids))
        if not 1 <= len(ids) <= MAX_QUERY_IDS:
            raise errors.ValidationFailed(f"user_ids: 1 to {MAX_QUERY_IDS} distinct ids")
        shared = await self._storage.chats.sharing_a_chat(user_id, ids)
        try:
            online = set(await self._registry.online_among(shared))
        except ClusterUnreachable:
            raise errors.Unavailable("presence cannot be read now, try again") from None
        return [(uid, uid in online) for uid in ids]
