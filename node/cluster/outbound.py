"""Everything this node sends through Redis for delivery, in order and batched.

Fan-outs of every chat (and ephemeral frames) are queued here; one task sends everything waiting
as one script call, so under load a single Redis round trip carries many chats' batches (while
fan-outs arrive faster than `linger_above` per second it waits `linger`, about a millisecond,
before taking the queue, so that each call carries several; below that rate nothing waits). Callers
wait only for room in the bounded queue, never for Redis: delivery to other nodes is at-most-once
anyway (Pub/Sub), and the record is PostgreSQL. A failed call is retried briefly, in order, then
dropped and counted; devices on other nodes then catch up by hole filling or, when their node's
subscription broke too, by the resync that follows its reconnect; dormant users' backlogs come
from PostgreSQL when their mailbox does not hold every seq.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from node import metrics
from node.cluster.connection import REDIS_DOWN
from node.cluster.fanout import Fanout, FanoutGroup
from node.load_gauge import LoadGauge

log = logging.getLogger(__name__)

_RETRY_DELAYS = (0.05, 0.2, 0.5)


class PushSink(Protocol):
    """Where pushes owed to dormant users go (implemented by node.push.notifier)."""

    def owed(self, pushes: Sequence[tuple[int, int]]) -> None:
        """(user id, message id) pairs; returns at once, whatever happens to them."""
        ...


class Outbound:
    def __init__(
        self,
        fanout: Fanout,
        *,
        push: PushSink | None = None,
        limit: int = 10_000,
        max_groups: int = 512,
        linger: float = 0.001,
        linger_above: float = 300.0,
    ) -> None:
        self._fanout = fanout
        self._push = push
        self._limit = limit
        self._max_groups = max_groups
        self._linger = linger
        self._linger_above = linger_above
        self._load = LoadGauge()
        self._queue: deque[FanoutGroup] = deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()
        self._busy = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    async def submit(self, group: FanoutGroup) -> None:
        """Queue a fan-out; waits only while the queue is full (backpressure)."""
        while len(self._queue) >= self._limit:
            self._room.clear()
            await self._room.wait()
        self._queue.append(group)
        self._load.arrived()
        self._wakeup.set()

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (bounded) until everything queued was sent: the last step of a graceful stop."""
        try:
            async with asyncio.timeout(timeout):
                while self._queue or self._busy:
                    self._idle.clear()
                    await self._idle.wait()
        except TimeoutError:
            log.warning("outbound.drain_timeout", extra={"left": len(self._queue)})

    async def run(self) -> None:
        """Send until cancelled."""
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._linger and self._load.current() >= self._linger_above:
                await asyncio.sleep(self._linger)  # under load: let more fan-outs join this call
            count = min(len(self._queue), self._max_groups)
            groups = [self._queue.popleft() for _ in range(count)]
            self._room.set()
            self._busy = True
            try:
                await self._send(groups)
            finally:
                self._busy = False
                if not self._queue:
                    self._idle.set()

    async def _send(self, groups: list[FanoutGroup]) -> None:
        for delay in (*_RETRY_DELAYS, None):
            try:
                result = await self._fanout.fanout_many(groups)
            except REDIS_DOWN as exc:
                metrics.REDIS_ERRORS.labels(op="fanout").inc()
                if delay is None:
                    self.dropped += len(groups)
                    log.warning(
                        "outbound.dropped", extra={"groups": len(groups), "error": str(exc)}
                    )
                    return
                await asyncio.sleep(delay)
                continue
            if result.dormant:
                metrics.MAILBOX_APPENDS.inc(result.dormant)
            if result.pushes and self._push is not None:
                self._push.owed(result.pushes)
            return
