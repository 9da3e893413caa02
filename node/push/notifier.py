"""The loop that sends the pushes owed to dormant users, never in delivery's way.

The fan-out script says who is owed a push (a user with no device connected anywhere in the
cluster, with a subscription, whose coalescing window was free: see `node.push.coalescing`);
`Outbound` hands those (user, message) pairs to `owed`, which only queues them (bounded: when the
queue is full the push is dropped and counted, delivery never waits). `run` sends them, a bounded
number at a time: it loads the message's chat and sender and the user's subscriptions from
PostgreSQL, and sends one encrypted push per subscription. A subscription its push service calls
gone (404/410) is deleted; other failures are retried a little (`RETRY_DELAYS`), then logged.
When a user's window ends, `run` also sends the newest message that came during it, if any.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp

from node import metrics
from node.push.coalescing import LateMessages, Windows
from node.push.payload import push_payload
from node.push.sender import Outcome, PushResult, PushSender
from node.push.subscriptions import PushFlags
from node.storage.push import PushStore, PushSubscription

log = logging.getLogger(__name__)

RETRY_DELAYS = (1.0, 4.0)
# how much later than the gate's expiry in Redis this node looks at a window's end
_WINDOW_MARGIN = 0.05


class PushNotifier:
    """Implements `node.cluster.outbound.PushSink`."""

    def __init__(
        self,
        store: PushStore,
        flags: PushFlags,
        sender: PushSender,
        late: LateMessages,
        *,
        window: float,
        include_text: bool,
        queue_size: int = 10_000,
        concurrency: int = 16,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self._store = store
        self._flags = flags
        self._sender = sender
        self._late = late
        self._window = window
        self._include_text = include_text
        self._queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue(queue_size)
        self._windows = Windows()
        self._slots = asyncio.Semaphore(concurrency)
        self._retry_delays = tuple(retry_delays)
        self.dropped = 0

    def owed(self, pushes: Sequence[tuple[int, int]]) -> None:
        """(user id, message id) pairs whose windows the fan-out script just opened; returns at
        once."""
        ends_at = asyncio.get_running_loop().time() + self._window + _WINDOW_MARGIN
        for user_id, message_id in pushes:
            self._windows.open(user_id, ends_at)
            try:
                self._queue.put_nowait((user_id, message_id))
            except asyncio.QueueFull:
                self.dropped += 1
                metrics.PUSHES.labels(outcome="dropped").inc()
                if self.dropped % 1000 == 1:
                    log.warning("push.queue_full", extra={"dropped": self.dropped})

    async def run(self) -> None:
        """Send until cancelled. Each push runs as a task of this loop's task group, at most
        `concurrency` at once; cancelling the loop cancels them."""
        async with self._sender.session() as http, asyncio.TaskGroup() as tasks:
            while True:
                user_id, message_id = await self._next()
                await self._slots.acquire()
                tasks.create_task(self._guarded(http, user_id, message_id))

    async def _next(self) -> tuple[int, int]:
        """The next owed push, or a user whose window ended (message id 0)."""
        loop = asyncio.get_running_loop()
        while True:
            ended = self._windows.pop_ended(loop.time())
            if ended is not None:
                return ended, 0
            if not self._queue.empty():
                return self._queue.get_nowait()
            deadline = self._windows.next_end()
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._queue.get()
            except TimeoutError:
                continue

    async def _guarded(self, http: aiohttp.ClientSession, user_id: int, message_id: int) -> None:
        """One push job; whatever goes wrong in it is logged here and stays here."""
        try:
            if message_id == 0:
                late = await self._late.take_late(user_id)
                if late is None:
                    return
                self._windows.open(
                    user_id, asyncio.get_running_loop().time() + self._window + _WINDOW_MARGIN
                )
                message_id = late
            await self._push(http, user_id, message_id)
        except Exception:
            log.exception("push.failed", extra={"user_id": user_id, "message_id": message_id})
        finally:
            self._slots.release()

    async def _push(self, http: aiohttp.ClientSession, user_id: int, message_id: int) -> None:
        subs = await self._store.for_user(user_id)
        if not subs:
            await self._flags.refresh(user_id)
            return
        message = await self._store.message(message_id)
        if message is None:
            return
        payload = push_payload(message, include_text=self._include_text)
        topic = f"chat-{message.chat_id}"
        results = await asyncio.gather(*(self._send(http, s, payload, topic) for s in subs))
        if any(r.outcome is Outcome.GONE for r in results):
            await self._flags.refresh(user_id)

    async def _send(
        self, http: aiohttp.ClientSession, sub: PushSubscription, payload: bytes, topic: str
    ) -> PushResult:
        for delay in (*self._retry_delays, None):
            result = await self._sender.send(http, sub, payload, topic)
            if result.outcome is not Outcome.RETRY or delay is None:
                break
            await asyncio.sleep(delay)
        metrics.PUSHES.labels(outcome=result.outcome.value).inc()
        extra = {"user_id": sub.user_id, "subscription": sub.id, "status": result.status}
        if result.outcome is Outcome.GONE:
            await self._store.discard(sub.id)
            log.info("push.subscription_gone", extra=extra)
        elif result.outcome is not Outcome.DELIVERED:
            log.warning("push.not_delivered", extra={**extra, "detail": result.detail})
        return result
