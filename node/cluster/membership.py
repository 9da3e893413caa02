"""Node membership by heartbeats into one registry: `members` is a sorted set {incarnation: expiry
in ms on the Redis clock}, and each beat pushes this node's expiry three intervals ahead.

A node whose expiry passed is dead to the others: its leases may be taken and its presence entries
are dropped. Each beat also refreshes this node's `ClusterView` (the dead incarnations) from the
registry. This node runs `on_lost_memory` (re-register what it holds, resynchronise every device
from PostgreSQL) when a beat finds that

- its entry is gone: Redis restarted empty (or the registry's shard lost it);
- its entry had lapsed: this process was paused past the TTL, so the others dropped its presence
  entries. It re-registers one and a half intervals later, once every other node has seen it
  alive again (before that, a node with the old view could drop the new entries again);
- a replica of the Redis Cluster was promoted: the failed master may have lost writes it had
  acknowledged (presence entries, leases, mailbox appends, publishes).

Only an answer from Redis leads there. A beat that fails because this process had no free
connection (`pool_starved`) concludes nothing about Redis and is retried a quarter interval
later; the node gives membership a backend of its own (`heartbeat_redis` in `assemble`), so a
connect storm that exhausts the main pool does not delay the beat until the entry lapses.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from node import metrics
from node.cluster import keys
from node.cluster.connection import REDIS_DOWN, RedisBackend, pool_starved
from node.cluster.identity import NodeIdentity
from node.cluster.liveness import DEAD_RETENTION_MS, ClusterView

log = logging.getLogger(__name__)

# Returns {state, dead...}: state 0 = this node was not registered, 1 = registered and alive,
# 2 = registered but lapsed. Time is the Redis server's, so node clocks may disagree.
_BEAT = """
local key, me, ttl, keep = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = redis.call('ZSCORE', key, me)
local state = 0
if old then
  if tonumber(old) > now then state = 1 else state = 2 end
end
redis.call('ZADD', key, now + ttl, me)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - keep)
local out = redis.call('ZRANGEBYSCORE', key, '-inf', now)
table.insert(out, 1, state)
return out
"""

# A graceful leave: dead from now on (kept, so that others drop what is left of its presence).
_LEAVE = """
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - 1, ARGV[1])
"""

_ABSENT, _ALIVE, _LAPSED = 0, 1, 2


BeatResult = tuple[int, list[str], bool]  # (state, dead incarnations, a replica was promoted)


class Membership:
    def __init__(
        self,
        backend: RedisBackend,
        identity: NodeIdentity,
        view: ClusterView,
        *,
        interval: float,
        on_lost_memory: Callable[[], Awaitable[None]],
        beat_backend: Callable[[], RedisBackend] | None = None,
        max_stall: float | None = None,
    ) -> None:
        """With `beat_backend` (a factory of backends), `run` beats from a thread of its own,
        on a backend made there: a busy event loop (a connect storm keeps it from turning for
        seconds) does not delay the beat past the TTL. The thread beats only while the event
        loop has turned within `max_stall` (10 intervals by default): a node whose loop is hung
        stops beating and is dead to the others as before."""
        self._backend = backend
        self._identity = identity
        self._view = view
        self._interval = interval
        self._ttl_ms = int(interval * 3 * 1000)
        self._on_lost_memory = on_lost_memory
        self._beat = backend.client.register_script(_BEAT)
        self._leave = backend.client.register_script(_LEAVE)
        self._beat_backend = beat_backend
        self._max_stall = max_stall if max_stall is not None else interval * 10
        self._tick = time.monotonic()  # the event loop turned (read by the beating thread)
        self._recover_after: float | None = None
        self._left = False
        self.healthy = False

    async def beat(self) -> int:
        """One heartbeat; refreshes the view. Returns the state it found this node in (see
        the script)."""
        state, dead = await self._beat_with(self._beat)
        self._view.update(dead)
        return state

    async def _beat_with(self, script: Any) -> tuple[int, list[str]]:
        reply = await script(
            keys=[keys.MEMBERS],
            args=[self._identity.incarnation, self._ttl_ms, DEAD_RETENTION_MS],
        )
        state, *dead = reply
        return int(state), [d.decode() if isinstance(d, bytes) else str(d) for d in dead]

    async def run(self) -> None:
        """Beat until cancelled. Redis errors are logged and retried at the next beat."""
        if self._beat_backend is not None:
            await self._run_threaded(self._beat_backend)
            return
        first = True
        while True:
            if self._left:  # stopping: the loop is cancelled next
                await asyncio.sleep(self._interval)
                continue
            try:
                state = await self.beat()
                promoted = await self._backend.promoted()
            except REDIS_DOWN as exc:
                if await self._beat_failed(exc):
                    continue
            else:
                await self._beat_done(state, promoted, first)
                first = False
            await asyncio.sleep(self._interval)

    async def _beat_failed(self, exc: BaseException) -> bool:
        """Log a failed beat; True when it is to be retried soon (the pool was starved)."""
        if pool_starved(exc):
            # no free connection in this process: Redis said nothing, so nothing is
            # concluded about it; beat again soon, before the entry can lapse
            metrics.REDIS_ERRORS.labels(op="heartbeat_starved").inc()
            log.warning("membership.beat_starved", extra={"error": str(exc)})
            await asyncio.sleep(self._interval / 4)
            return True
        metrics.REDIS_ERRORS.labels(op="heartbeat").inc()
        if self.healthy:
            log.warning("membership.redis_down", extra={"error": str(exc)})
        self.healthy = False
        return False

    async def _beat_done(self, state: int, promoted: bool, first: bool) -> None:
        if not self.healthy:
            log.info("membership.redis_ok", extra={"node": self._identity.incarnation})
        self.healthy = True
        await self._after_beat(state, promoted, first)

    async def _run_threaded(self, make_backend: Callable[[], RedisBackend]) -> None:
        """Beats come from the thread (`_beat_forever`); what they found is acted on here, on
        the event loop, in order."""
        loop = asyncio.get_running_loop()
        results: asyncio.Queue[BeatResult | BaseException] = asyncio.Queue()
        stop = threading.Event()

        def deliver(item: BeatResult | BaseException) -> None:
            loop.call_soon_threadsafe(results.put_nowait, item)

        thread = threading.Thread(
            target=lambda: asyncio.run(self._beat_forever(make_backend, deliver, stop)),
            name="heartbeat",
            daemon=True,
        )
        ticking: asyncio.TimerHandle | None = None

        def tick() -> None:  # the loop turned: a timer of its own, whatever run() awaits
            nonlocal ticking
            self._tick = time.monotonic()
            ticking = loop.call_later(self._interval, tick)

        tick()
        thread.start()
        first = True
        try:
            while True:
                try:
                    item = await asyncio.wait_for(results.get(), self._interval)
                except TimeoutError:
                    continue
                if self._left:
                    continue
                if isinstance(item, BaseException):
                    await self._beat_failed(item)
                    continue
                state, dead, promoted = item
                self._view.update(dead)
                await self._beat_done(state, promoted, first)
                first = False
        finally:
            if ticking is not None:
                ticking.cancel()
            stop.set()
            await asyncio.shield(asyncio.to_thread(thread.join, self._interval + 30))

    async def _beat_forever(
        self,
        make_backend: Callable[[], RedisBackend],
        deliver: Callable[[BeatResult | BaseException], None],
        stop: threading.Event,
    ) -> None:
        """The beating thread's loop, on its own event loop and backend, until `stop`."""
        backend = make_backend()
        script = backend.client.register_script(_BEAT)
        stalled = False
        try:
            while not stop.is_set():
                if self._left:
                    break
                stall = time.monotonic() - self._tick
                if stall > self._max_stall:
                    if not stalled:
                        log.error("membership.loop_stalled", extra={"seconds": round(stall, 1)})
                    stalled = True  # no beat: a hung node must look dead
                else:
                    stalled = False
                    try:
                        state, dead = await self._beat_with(script)
                        deliver((state, dead, await backend.promoted()))
                    except REDIS_DOWN as exc:
                        deliver(exc)
                await _sleep_unless(stop, self._interval if not stalled else self._interval / 4)
        except RuntimeError:  # the node's event loop is closed: nothing to tell any more
            pass
        finally:
            await backend.aclose()

    async def _after_beat(self, state: int, promoted: bool, first: bool) -> None:
        me = self._identity.incarnation
        if state == _ABSENT and not first:
            log.warning("membership.redis_forgot", extra={"node": me})
            self._recover_after = None
            await self._on_lost_memory()
            return
        if state == _LAPSED:
            log.warning("membership.lapsed", extra={"node": me})
            self._recover_after = time.monotonic() + self._interval * 1.5
        if promoted:
            log.warning("membership.redis_failover", extra={"node": me})
            self._recover_after = None
            await self._on_lost_memory()
            return
        if self._recover_after is not None and time.monotonic() >= self._recover_after:
            self._recover_after = None
            await self._on_lost_memory()

    async def leave(self) -> None:
        """A graceful stop: dead to the others from now on, and no more beats."""
        self._left = True
        try:
            await self._leave(keys=[keys.MEMBERS], args=[self._identity.incarnation])
        except REDIS_DOWN:
            pass


async def _sleep_unless(stop: threading.Event, seconds: float) -> None:
    """Sleep `seconds`, or less once `stop` is set."""
    await asyncio.to_thread(stop.wait, seconds)
