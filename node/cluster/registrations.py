"""Presence registrations of many users in one Redis call: the user actors' `PresenceRegistry`.

A user actor's `set_devices` queues its request and waits for the answer; one loop sends
everything queued as one `Presence.set_many` (one script call on one Redis, one pipeline on a
Redis Cluster). Nothing is delayed on purpose: while a call is in flight the next requests
gather, so a quiet node pays one round trip per registration as before, and a connect storm of
thousands of users a handful of round trips instead of one per user (with the pool's
connections never exhausted by presence).

Guarantees: each request gets its own answer, in the order it was queued per user; a failed
call fails every request it carried with `ClusterUnreachable` (presence is best effort: the
caller logs it and goes on); a request waits at most `timeout` seconds, also when the loop is
not running (a node stopping). The bound is generous on purpose: the fan-out routes by these
entries (a user not registered here gets its messages boxed, not published to this node), so
under a storm a late registration is much better than a failed one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from node.actors.ports import ClusterUnreachable
from node.cluster.presence import Presence

_Request = tuple[int, int, "asyncio.Future[tuple[int, int]]"]


class PresenceRegistrations:
    def __init__(self, presence: Presence, *, max_batch: int = 2000, timeout: float = 15.0) -> None:
        self._presence = presence
        self._max_batch = max_batch
        self._timeout = timeout
        self._queue: deque[_Request] = deque()
        self._wakeup = asyncio.Event()

    async def set_devices(self, user_id: int, local_devices: int) -> tuple[int, int]:
        """Record this node's device count for the user; (total before, total after)."""
        future: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._queue.append((user_id, local_devices, future))
        self._wakeup.set()
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(future)
        except TimeoutError:
            raise ClusterUnreachable("presence registration timed out") from None

    async def online_among(self, user_ids: Sequence[int]) -> list[int]:
        return await self._presence.online_among(user_ids)

    async def run(self) -> None:
        """Send until cancelled; requests left when it stops are failed."""
        batch: list[_Request] = []
        try:
            while True:
                while not self._queue:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                count = min(len(self._queue), self._max_batch)
                batch = [self._queue.popleft() for _ in range(count)]
                try:
                    answers = await self._presence.set_many([(u, n) for u, n, _ in batch])
                except ClusterUnreachable as exc:
                    _fail(batch, exc)
                else:
                    for (_, _, future), answer in zip(batch, answers, strict=True):
                        if not future.done():
                            future.set_result(answer)
                batch = []
        finally:
            stopped = ClusterUnreachable("presence registrations stopped")
            _fail(batch, stopped)
            _fail(list(self._queue), stopped)
            self._queue.clear()


def _fail(requests: Sequence[_Request], exc: Exception) -> None:
    for _, _, future in requests:
        if not future.done():
            future.set_exception(exc)
            future.exception()  # retrieved: a caller that timed out is not logged about
