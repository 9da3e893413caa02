"""Storing and removing push subscriptions, and the per-user flag the fan-out script reads.

The fan-out script (`node.cluster.fanout`) runs for every message batch; it must not ask
PostgreSQL who has subscriptions. It reads `pushsub:<user>` in Redis instead: set while the user
has at least one subscription. A flag that is set without subscriptions costs one wasted lookup
(the notifier then clears it); a flag that is missing loses pushes, so the order of writes makes
sure it never goes missing for a user who has one:

- adding stores the row, then sets the flag;
- removing deletes the row, then `refresh`: clears the flag, then sets it again if any row is
  left. A concurrent add either committed before that check (seen: flag set again) or sets the
  flag after the clear;
- a Redis that lost its memory lost the flags too: `PushFlags.run` notices the missing marker
  key and sets every subscribed user's flag again from PostgreSQL (within one check interval).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from node import errors
from node.cluster import keys
from node.cluster.connection import REDIS_DOWN, RedisClient
from node.push.targets import InvalidSubscription, check_subscription
from node.storage.errors import DATABASE_ERRORS
from node.storage.push import PushStore

log = logging.getLogger(__name__)

# subscriptions kept per user: past it, the oldest go
KEEP_PER_USER = 10
_FAILURES: tuple[type[BaseException], ...] = (*REDIS_DOWN, *DATABASE_ERRORS)


class PushFlags:
    def __init__(self, redis: RedisClient, store: PushStore, *, interval: float = 30.0) -> None:
        self._redis = redis
        self._store = store
        self._interval = interval

    async def set(self, user_id: int) -> None:
        await self._redis.set(keys.push_subscribed(user_id), 1)

    async def refresh(self, user_id: int) -> None:
        """Make the flag say whether the user has a subscription now (see the module doc)."""
        await self._redis.delete(keys.push_subscribed(user_id))
        if await self._store.has_any(user_id):
            await self.set(user_id)

    async def restore(self) -> int:
        """Set the flag of every subscribed user, then the marker; returns how many."""
        count = 0
        async for page in self._store.subscribed_users():
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in page:
                    pipe.set(keys.push_subscribed(user_id), 1)
                await pipe.execute()
            count += len(page)
        await self._redis.set(keys.PUSH_FLAGS_MARKER, 1)
        return count

    async def run(self) -> None:
        """Restore the flags whenever the marker is missing (a new or emptied Redis), until
        cancelled. Failures are logged and tried again at the next check."""
        while True:
            try:
                if not await self._redis.exists(keys.PUSH_FLAGS_MARKER):
                    count = await self.restore()
                    log.info("push.flags_restored", extra={"users": count})
            except _FAILURES as exc:
                log.warning("push.flags_failed", extra={"error": repr(exc)})
            await asyncio.sleep(self._interval)


class PushSubscriptions:
    """The REST side: the VAPID public key, and each user's subscriptions."""

    def __init__(
        self, store: PushStore, flags: PushFlags, *, public_key: str, allowed_hosts: Iterable[str]
    ) -> None:
        self._store = store
        self._flags = flags
        self.public_key = public_key
        self._allowed = tuple(allowed_hosts)

    async def add(self, user_id: int, endpoint: str, p256dh: str, auth: str) -> int:
        """Store the subscription (422 when it names anything but an allowed push service, or
        its keys are unusable); the same endpoint again keeps its id."""
        try:
            target = check_subscription(endpoint, p256dh, auth, self._allowed)
        except InvalidSubscription as exc:
            raise errors.ValidationFailed(str(exc)) from None
        sub_id = await self._store.add(
            user_id, target.endpoint, target.p256dh, target.auth, keep=KEEP_PER_USER
        )
        try:
            await self._flags.set(user_id)
        except REDIS_DOWN as exc:  # stored but not yet flagged: the client retries
            raise errors.Unavailable() from exc
        return sub_id

    async def remove(self, user_id: int, sub_id: int) -> None:
        """Delete one of the user's subscriptions; 404 for anyone else's or an unknown id."""
        if not await self._store.remove(user_id, sub_id):
            raise errors.NotFound("no such subscription")
        try:
            await self._flags.refresh(user_id)
        except REDIS_DOWN:  # a flag left set costs one lookup, no more
            pass
