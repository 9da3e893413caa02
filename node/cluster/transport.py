"""Node-to-node transport over Redis Pub/Sub: one inbox channel per node incarnation.

`Publisher` sends an envelope to one node's inbox; `InboxSubscriber` listens on this node's inbox
and hands each envelope to the dispatcher. On a Redis Cluster the inbox is a shard channel
(`SPUBLISH` / `SSUBSCRIBE`): a message travels to the shard of the node that needs it only.

Pub/Sub is at-most-once: what is published while a subscriber is disconnected is gone. Nothing
correct rests on it. The subscription counts as broken when its connection fails or when the
server unsubscribes it (on a Redis Cluster: the channel's slot moved to another shard, or its
master failed over); the subscriber then rediscovers the cluster's layout, subscribes where the
channel lives now, and runs `on_resubscribed`: the node re-registers what it holds and
resynchronises every connected device from PostgreSQL (see `node.cluster.recovery`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from node import metrics
from node.cluster import envelopes, keys
from node.cluster.connection import REDIS_DOWN, RedisBackend
from node.cluster.identity import NodeIdentity

log = logging.getLogger(__name__)

_BACKOFF_START, _BACKOFF_MAX = 0.05, 2.0
_POLL = 5.0  # seconds a read waits for a message before checking again
_CLOSING: tuple[type[Exception], ...] = (*REDIS_DOWN, TimeoutError)


class Publisher:
    def __init__(self, backend: RedisBackend) -> None:
        self._backend = backend

    async def publish(self, incarnation: str, envelope: envelopes.Envelope) -> int:
        """Publish to one node's inbox; returns how many subscribers got it (0: none)."""
        return await self._backend.publish(keys.inbox(incarnation), envelopes.encode(envelope))


class _Subscription:
    """One subscription to one channel: plain on one Redis, sharded on a Redis Cluster."""

    def __init__(self, backend: RedisBackend, channel: str) -> None:
        self._channel = channel
        self._client = backend.client
        self._sharded = backend.sharded
        self._pubsub: Any = backend.client.pubsub(ignore_subscribe_messages=not self._sharded)

    async def start(self) -> None:
        if isinstance(self._client, RedisCluster):
            await self._client.initialize()  # the layout, to find the channel's shard
            await self._pubsub.ssubscribe(self._channel)
        else:
            await self._pubsub.subscribe(self._channel)

    async def next(self) -> bytes | None:
        """The next message's data, or None when none came within the poll interval. Raises
        RedisError when the subscription broke."""
        if not self._sharded:
            message = await self._pubsub.get_message(timeout=_POLL)
            return message["data"] if message and message["type"] == "message" else None
        message = await self._pubsub.get_sharded_message(timeout=_POLL)
        if message is None:
            return None
        if message["type"] == "sunsubscribe":  # the server dropped us: the slot moved
            raise RedisConnectionError("unsubscribed by the server (slot moved)")
        return message["data"] if message["type"] == "smessage" else None

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pubsub.aclose(), 1.0)
        except _CLOSING:
            pass


class InboxSubscriber:
    def __init__(
        self,
        backend: RedisBackend,
        identity: NodeIdentity,
        *,
        on_envelope: Callable[[envelopes.Envelope], Awaitable[None]],
        on_resubscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self._backend = backend
        self._channel = keys.inbox(identity.incarnation)
        self._on_envelope = on_envelope
        self._on_resubscribed = on_resubscribed
        self.subscribed = asyncio.Event()

    async def run(self) -> None:
        """Subscribe and dispatch until cancelled; reconnect with capped exponential backoff."""
        backoff = _BACKOFF_START
        failed = False
        while True:
            subscription = _Subscription(self._backend, self._channel)
            try:
                await subscription.start()
                self.subscribed.set()
                if failed:
                    log.info("transport.resubscribed", extra={"channel": self._channel})
                    await self._on_resubscribed()
                failed, backoff = False, _BACKOFF_START
                while True:
                    data = await subscription.next()
                    if data is not None:
                        await self._dispatch(data)
            except REDIS_DOWN as exc:
                self.subscribed.clear()
                metrics.REDIS_ERRORS.labels(op="subscribe").inc()
                if not failed:
                    log.warning("transport.disconnected", extra={"error": str(exc)})
                failed = True
            finally:
                await subscription.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)
            await self._rediscover()

    async def _rediscover(self) -> None:
        """Learn where the channel lives now (a Redis Cluster's layout may have changed)."""
        try:
            await self._backend.refresh()
        except REDIS_DOWN as exc:
            log.info("transport.rediscover_failed", extra={"error": str(exc)})

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
