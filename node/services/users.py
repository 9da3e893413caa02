"""Looking users up: by id and by username prefix."""

from __future__ import annotations

from node import errors
from node.domain import User
from node.storage import Storage


class UserService:
    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def me(self, user_id: int) -> User:
        """The authenticated user. A valid token whose user no longer exists is 401."""
        user = await self._storage.users.get(user_id)
        if user is None:
            raise errors.Unauthorized("the token's user does not exist", code="invalid_token")
        return user

    async def get(self, user_id: int) -> User:
        """Any user by id (every user is visible to every other); 404 when unknown."""
        user = await self._storage.users.get(user_id)
        if user is None:
            raise errors.NotFound("no such user")
        return user

    async def search(self, prefix: str, limit: int) -> list[User]:
        """Users whose username starts with `prefix` (case-insensitive), alphabetical, at most
        `limit`. An empty prefix lists users alphabetically."""
        return await self._storage.users.search(prefix, limit)
