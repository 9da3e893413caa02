"""The one place that knows which Redis the node talks to: one Redis (`redis://`, `rediss://`,
`unix://`) or a Redis Cluster (`redis+cluster://host:port[,host:port…]`, `rediss+cluster://`
with TLS), chosen by the URL's scheme.

Everything else sees a `RedisBackend`: the client, whether keys are sharded over hash slots
(`sharded`: then no script may span slots, and a batch that one script call carries on one Redis
is sent as pipelined commands, routed to every shard in parallel), and the Pub/Sub flavour (plain
`PUBLISH` / `SUBSCRIBE` on one Redis, which also serves Redis 6; sharded `SPUBLISH` / `SSUBSCRIBE`
on a Redis Cluster, so a message is sent on the shard of the node that needs it, never
broadcast).

Clients fail fast when Redis is away (a short retry for a dropped connection) instead of hanging:
callers answer 503 or carry on without Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff, ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

RedisClient = aioredis.Redis | RedisCluster

# What a failed Redis call raises: the server's or the connection's errors, and the cluster
# client's own (a slot with no master mid-failover is not a RedisError).
REDIS_DOWN: tuple[type[Exception], ...] = (RedisError, RedisClusterException, OSError)

# How many command timeouts a command may wait for a free connection of its pool.
POOL_WAIT_FACTOR = 4

SINGLE_SCHEMES = ("redis", "rediss", "unix")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(slots=True, frozen=True)
class RedisTarget:
    """A parsed `MESSENGER_REDIS_URL`."""

    url: str
    cluster: bool
    tls: bool = False
    nodes: tuple[tuple[str, int], ...] = ()  # cluster: the seed nodes
    username: str | None = None
    password: str | None = None


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL; raises ValueError naming what is wrong (the settings validator shows
    it). A cluster URL lists seed nodes; the rest of the cluster is discovered from them."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SINGLE_SCHEMES + CLUSTER_SCHEMES:
        raise ValueError(
            "must start with redis://, rediss://, unix://, redis+cluster:// or rediss+cluster://"
        )
    if scheme in SINGLE_SCHEMES:
        return RedisTarget(url=url, cluster=False, tls=scheme == "rediss")
    netloc, _, tail = rest.partition("/")
    if "?" in netloc or "?" in tail or tail.strip("0"):
        raise ValueError("a Redis Cluster URL takes no database number or options")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    nodes = tuple(_host_port(part) for part in hosts.split(","))
    return RedisTarget(
        url=url,
        cluster=True,
        tls=scheme == "rediss+cluster",
        nodes=nodes,
        username=username,
        password=password,
    )


def _host_port(text: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text.strip() or '(empty)'!r} is not host:port")
    return host, int(port)


@dataclass(slots=True)
class RedisBackend:
    """One Redis deployment as the node uses it. `sharded` is True for a Redis Cluster."""

    client: RedisClient
    sharded: bool
    _roles: dict[str, str] = field(default_factory=dict)

    @classmethod
    def connect(
        cls, url: str, *, timeout: float, pool_size: int = 256, pubsub: bool = False
    ) -> RedisBackend:
        """A backend for `url` with at most `pool_size` connections (per node of a Redis
        Cluster). On one Redis a command waits up to `POOL_WAIT_FACTOR * timeout` for a free
        connection, then fails with `ConnectionError("No connection available.")` (see
        `pool_starved`); the
        cluster client does not queue and fails at once. A `pubsub` client has no read timeout
        (it waits for messages), a health check instead, and no retry of its own: a broken
        subscription must surface (whatever was published meanwhile is gone, and the node has
        to resynchronise)."""
        target = parse_redis_url(url)
        if target.cluster:
            return cls(
                _cluster_client(target, timeout=timeout, pool_size=pool_size, pubsub=pubsub),
                sharded=True,
            )
        return cls(
            _single_client(url, timeout=timeout, pool_size=pool_size, pubsub=pubsub),
            sharded=False,
        )

    async def publish(self, channel: str, data: bytes) -> int:
        """Publish to a node's inbox; how many subscribers got it (on a Redis Cluster: those
        on the shard's master, where inbox subscribers connect)."""
        if self.sharded:
            return int(await self.client.spublish(channel, data))
        return int(await self.client.publish(channel, data))

    async def refresh(self) -> None:
        """Forget the cluster's layout and discover it again (after a failover or a slot
        migration the subscriber must find its channel's new shard). Nothing on one Redis."""
        if isinstance(self.client, RedisCluster):
            await self.client.aclose()
            await self.client.initialize()

    async def promoted(self) -> bool:
        """True when a replica became a master since the last call (a failover). Writes the
        old master acknowledged may be lost then, so the node re-registers what it holds.
        Always False on one Redis. Raises RedisError when the cluster cannot be asked."""
        if not isinstance(self.client, RedisCluster):
            return False
        nodes: dict[str, Any] = await self.client.cluster_nodes()
        roles = {
            str(info["node_id"]): "master" if "master" in str(info["flags"]) else "replica"
            for info in nodes.values()
            if "fail" not in str(info["flags"]).split(",")
        }
        promoted = any(
            self._roles.get(node) == "replica" and role == "master" for node, role in roles.items()
        )
        self._roles = roles
        return promoted

    async def aclose(self) -> None:
        await self.client.aclose()


def pool_starved(exc: BaseException) -> bool:
    """True when a command failed because this process had no free connection to run it on
    (the pool was exhausted for the whole wait): a local shortage, not an answer from Redis and
    not a sign that Redis is down or lost its data."""
    return isinstance(exc, RedisConnectionError) and "No connection available" in str(exc)


def _single_client(url: str, *, timeout: float, pool_size: int, pubsub: bool) -> aioredis.Redis:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=min(4, pool_size) if pubsub else pool_size,
        # waiting for a free connection is queueing in this process, not Redis being slow: it
        # may take longer than a command (every holder is bounded by socket_timeout anyway)
        timeout=timeout * POOL_WAIT_FACTOR,
        socket_timeout=None if pubsub else timeout,
        socket_connect_timeout=timeout,
        health_check_interval=10 if pubsub else 0,
        retry=Retry(ConstantBackoff(0.05), 0 if pubsub else 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


class _RedisCluster(RedisCluster):
    """redis-py's cluster client, with two faults of its own turned into the errors they mean
    (so that callers, and the client's own retries, treat them as Redis being away):

    - a cluster that serves no slot at all (being created, e.g. after a restart from empty)
      makes `initialize` raise IndexError (redis/redis-py#2433): a slot not covered;
    - a command on a connection the client closed meanwhile (it closes every connection when
      a failover makes the cluster report itself down) raises whatever the closed transport
      raises, RuntimeError or AttributeError (redis/redis-py#4287): a connection error.
    """

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        try:
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)
        except IndexError as exc:
            raise SlotNotCoveredError("the Redis Cluster serves no slot (yet)") from exc

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _closed_transport_is_a_connection_error():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        with _closed_transport_is_a_connection_error():
            return await super().execute(raise_on_error, allow_redirections)


@contextmanager
def _closed_transport_is_a_connection_error() -> Iterator[None]:
    try:
        yield
    except (RuntimeError, AttributeError, TypeError) as exc:
        if not _raised_by_the_transport(exc):
            raise
        raise RedisConnectionError(f"connection closed under a command: {exc!r}") from exc


def _raised_by_the_transport(exc: BaseException) -> bool:
    """True when the innermost frame is redis-py's connection code or the event loop's
    transport: a connection another coroutine closed meanwhile, not a fault of the caller's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    return any(part in where for part in ("redis/asyncio/connection", "asyncio/", "uvloop"))


def _cluster_client(
    target: RedisTarget, *, timeout: float, pool_size: int, pubsub: bool
) -> RedisCluster:
    return _RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        # the URL's nodes stay the seeds: a cluster restarted from empty (new node ids, a
        # moment with no slots) is found again through them
        dynamic_startup_nodes=False,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        # a slot without a master (mid-failover) fails only the commands that need it
        require_full_coverage=False,
        # per node; the cluster client does not wait for a free connection, it fails at once:
        # it gets four times the headroom of the single client's (which queues)
        max_connections=min(8, pool_size) if pubsub else pool_size * 4,
        socket_timeout=None if pubsub else timeout,
        socket_connect_timeout=timeout,
        health_check_interval=2 if pubsub else 0,
        # a few quick tries across a failover, rediscovering the layout between them
        retry=Retry(ExponentialBackoff(cap=0.4, base=0.05), 3),
    )
