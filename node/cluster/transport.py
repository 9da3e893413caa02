"""Node-to-node transport over Redis Pub/Sub: one inbox channel per node incarnation.

`Publisher` sends an envelope to one node's inbox; `InboxSubscriber` listens on this node's inbox
and hands each envelope to the dispatcher. Pub/Sub is at-most-once: what is published while a
subscriber is disconnected is gone. Nothing correct rests on it. When the subscription is
re-established after a failure, `on_resubscribed` runs, and the node re-registers what it holds
and resynchronises every connected device from PostgreSQL (see `node.cluster.recovery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import RedisError

from node import metrics
from node.cluster import envelopes, keys
from node.cluster.identity import NodeIdentity

log = logging.getLogger(__name__)

_BACKOFF_START, _BACKOFF_MAX = 0.05, 2.0


class Publisher:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def publish(self, incarnation: str, envelope: envelopes.Envelope) -> int:
        """Publish to one node's inbox; returns how many subscribers got it (0: none)."""
        return int(await self._redis.publish(keys.inbox(incarnation), envelopes.encode(envelope)))


class InboxSubscriber:
    def __init__(
        self,
        redis: aioredis.Redis,
        identity: NodeIdentity,
        *,
        on_envelope: Callable[[envelopes.Envelope], Awaitable[None]],
        on_resubscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self._redis = redis
        self._channel = keys.inbox(identity.incarnation)
        self._on_envelope = on_envelope
        self._on_resubscribed = on_resubscribed
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        """Subscribe and dispatch until cancelled; reconnect with capped exponential backoff."""
        backoff = _BACKOFF_START
        failed = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self.subscribed.set()
                if failed:
                    log.info("transport.resubscribed", extra={"channel": self._channel})
                    await self._on_resubscribed()
                failed, backoff = False, _BACKOFF_START
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is not None and message["type"] == "message":
                        await self._dispatch(message["data"])
            except (RedisError, OSError) as exc:
                self.subscribed.clear()
                metrics.REDIS_ERRORS.labels(op="subscribe").inc()
                if not failed:
                    log.warning("transport.disconnected", extra={"error": str(exc)})
                failed = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX)
            finally:
                try:
                    await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
                except (RedisError, OSError, TimeoutError):
                    pass

    async def _dispatch(self, data: bytes) -> None:
        try:
            envelope = envelopes.decode(data)
        except ValidationError as exc:
            log.warning("transport.bad_envelope", extra={"error": str(exc)[:300]})
            return
        try:
            await self._on_envelope(envelope)
        except Exception:
            log.exception("transport.dispatch_failed", extra={"kind": envelope.kind})
