"""Redis clients of a node: fail fast when Redis is away, and own their pools."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


def redis_client(url: str, *, timeout: float, pubsub: bool = False) -> aioredis.Redis:
    """A client that fails fast when Redis is away (one quick retry for a dropped connection)
    instead of hanging: callers answer 503 or carry on without Redis. A `pubsub` client has no
    read timeout (it waits for messages) and a health check instead."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=4 if pubsub else 64,
        timeout=timeout,
        socket_timeout=None if pubsub else timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10 if pubsub else 0,
        retry=Retry(ConstantBackoff(0.05), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
