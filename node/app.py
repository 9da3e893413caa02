"""Wiring: builds the aiohttp application and everything the node owns, in start-up order, and
tears it down in reverse.

Start: embedded servers (when no URLs are given) -> migrations (under an advisory lock) -> the
PostgreSQL pool -> Redis -> membership, directory, transport, router, actors -> services -> routes.
SIGTERM/SIGINT (aiohttp's `run_app`): the listener stops accepting, every WebSocket is closed with
1001, chat actors drain what they hold into PostgreSQL, user actors stop, pending acks are
flushed, leases are released, connections closed, embedded servers stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from node import metrics
from node.actors.base import ActorRegistry, RestartBudget
from node.actors.chat import ChatActor
from node.actors.committer import CommitPipeline
from node.actors.cursors import CursorWriter
from node.actors.session import SessionDeps
from node.actors.user import UserActor
from node.cluster.directory import Directory
from node.cluster.fanout import Fanout
from node.cluster.identity import NodeIdentity
from node.cluster.membership import Membership
from node.cluster.outbound import Outbound
from node.cluster.router import Router
from node.cluster.transport import Transport
from node.config import Settings, resolve_jwt_secret
from node.http import keys
from node.http.middleware import error_middleware
from node.http.routes import setup_routes
from node.services.auth import AuthService
from node.services.chats import ChatService
from node.services.devices import DeviceHub
from node.services.health import HealthService
from node.services.messages import MessageService
from node.services.ratelimit import RateLimiter
from node.services.users import UserService
from node.storage import Storage, apply_migrations, create_pool
from node.tasks import TaskSet

log = logging.getLogger(__name__)

RUNTIME: web.AppKey[NodeRuntime] = web.AppKey("runtime")


@dataclass(slots=True)
class NodeRuntime:
    """What a running node owns (for metrics and tests)."""

    settings: Settings
    identity: NodeIdentity
    storage: Storage
    redis: aioredis.Redis
    router: Router
    committer: CommitPipeline
    outbound: Outbound
    hub: DeviceHub
    cursors: CursorWriter
    chats: ActorRegistry
    users: ActorRegistry
    membership: Membership
    transport: Transport
    directory: Directory


def build_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=[error_middleware])
    app[keys.SETTINGS] = settings
    app.cleanup_ctx.append(_node_context)
    app.on_shutdown.append(_close_sockets)
    setup_routes(app)
    return app


def redis_client(url: str, settings: Settings, *, pubsub: bool = False) -> aioredis.Redis:
    """A client that fails fast when Redis is away (one quick retry for a dropped connection)
    instead of hanging: callers answer 503 or carry on without Redis."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=4 if pubsub else 64,
        timeout=settings.redis_timeout,
        socket_timeout=None if pubsub else settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        health_check_interval=10 if pubsub else 0,
        retry=Retry(ConstantBackoff(0.05), 1),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


async def _node_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with AsyncExitStack() as stack:
        settings = await _start_embedded(settings, stack)
        identity = NodeIdentity.new(settings.node_id)

        await apply_migrations(settings.database_url or "")
        pool = await create_pool(settings.database_url or "", size=settings.db_pool_size)
        stack.push_async_callback(_bounded, pool.close(), "pool.close")
        storage = Storage.over(pool)

        redis = redis_client(settings.redis_url or "", settings)
        stack.push_async_callback(redis.aclose)
        await redis.ping()
        pubsub_redis = redis_client(settings.redis_url or "", settings, pubsub=True)
        stack.push_async_callback(pubsub_redis.aclose)

        tasks = TaskSet("node")
        stack.push_async_callback(tasks.close)
        runtime = _assemble(settings, identity, storage, redis, pubsub_redis)
        membership, directory, transport = runtime.membership, runtime.directory, runtime.transport
        await membership.beat()
        stack.push_async_callback(membership.leave)
        stack.push_async_callback(directory.release_all)
        stack.push_async_callback(runtime.cursors.flush)
        stack.push_async_callback(runtime.outbound.drain)
        stack.push_async_callback(runtime.router.tasks.close)
        stack.push_async_callback(runtime.users.close, settings.shutdown_timeout)
        stack.push_async_callback(runtime.chats.close, settings.shutdown_timeout)
        for name, coro in (
            ("membership", membership.run()),
            ("leases", directory.run()),
            ("transport", transport.run()),
            ("cursors", runtime.cursors.run()),
            ("commits", runtime.committer.run()),
            ("outbound", runtime.outbound.run()),
        ):
            tasks.start(coro, name=name)
        await asyncio.wait_for(transport.subscribed.wait(), settings.redis_timeout * 5)

        limiter = RateLimiter(burst=settings.rate_burst, rate=settings.rate_per_second)
        app[RUNTIME] = runtime
        metrics.bind_runtime(runtime)
        app[keys.DEVICES] = runtime.hub
        app[keys.AUTH] = AuthService(storage, settings, resolve_jwt_secret(settings))
        app[keys.USERS] = UserService(storage)
        app[keys.CHATS] = ChatService(storage)
        app[keys.MESSAGES] = MessageService(
            storage, runtime.router, limiter, reply_timeout=settings.lease_ttl * 2 + 5
        )
        app[keys.HEALTH] = HealthService(storage, redis, settings.node_id)
        log.info(
            "node.started",
            extra={"node": identity.incarnation, "host": settings.host, "port": settings.port},
        )
        yield
        log.info("node.stopping", extra={"node": identity.incarnation})


def _assemble(
    settings: Settings,
    identity: NodeIdentity,
    storage: Storage,
    redis: aioredis.Redis,
    pubsub_redis: aioredis.Redis,
) -> NodeRuntime:
    chats, users = ActorRegistry("chats"), ActorRegistry("users")
    committer = CommitPipeline(storage.messages)
    fanout = Fanout(
        redis,
        identity.incarnation,
        mailbox_max=settings.mailbox_max,
        mailbox_ttl=settings.mailbox_ttl,
    )
    router_box: list[Router] = []
    directory = Directory(
        redis, identity, ttl=settings.lease_ttl, on_lost=lambda key: router_box[0].lease_lost(key)
    )

    def chat_actor(chat_id: int) -> ChatActor:
        return ChatActor(
            chat_id,
            storage=storage,
            committer=committer,
            directory=directory,
            router=router,
            mailbox_size=settings.chat_mailbox_size,
            idle_timeout=settings.actor_idle_timeout,
        )

    def user_actor(user_id: int) -> UserActor:
        return UserActor(
            user_id,
            storage=storage,
            fanout=fanout,
            router=router,
            mailbox_size=settings.user_mailbox_size,
            idle_timeout=settings.actor_idle_timeout,
            presence_grace=settings.presence_grace,
        )

    outbound = Outbound(fanout)
    router = Router(
        identity=identity,
        directory=directory,
        outbound=outbound,
        chats=chats,
        users=users,
        chat_factory=chat_actor,
        user_factory=user_actor,
        forward_timeout=settings.lease_ttl * 2,
    )
    router_box.append(router)
    transport = Transport(
        pubsub_redis, identity, on_envelope=router.on_envelope, on_resubscribed=router.recover
    )
    router.transport = transport
    membership = Membership(
        redis, identity, interval=settings.heartbeat_interval, on_lost_memory=router.recover
    )
    cursors = CursorWriter(storage.cursors, interval=settings.ack_flush_interval)
    deps = SessionDeps(
        storage=storage,
        fanout=fanout,
        cursors=cursors,
        node_id=settings.node_id,
        backlog_limit=settings.backlog_limit,
        outbox_limit=settings.outbox_limit,
    )
    return NodeRuntime(
        settings=settings,
        identity=identity,
        storage=storage,
        redis=redis,
        router=router,
        committer=committer,
        outbound=outbound,
        hub=DeviceHub(deps, router),
        cursors=cursors,
        chats=chats,
        users=users,
        membership=membership,
        transport=transport,
        directory=directory,
    )


async def _start_embedded(settings: Settings, stack: AsyncExitStack) -> Settings:
    """Start embedded PostgreSQL and/or Redis when their URLs are unset; the node owns them."""
    if not settings.embedded:
        return settings
    from node.embedded import EmbeddedServers

    servers = EmbeddedServers(
        settings.data_dir,
        postgres=settings.database_url is None,
        redis=settings.redis_url is None,
        start_timeout=settings.embedded_start_timeout,
    )
    stack.push_async_callback(asyncio.to_thread, servers.stop)  # waits for a start under way
    database_url, redis_url = await asyncio.to_thread(servers.start)
    watch = TaskSet("embedded")  # closed before the servers stop
    stack.push_async_callback(watch.close)
    watch.start(servers.watch().run(), name="embedded.watch")
    log.info("embedded.ready", extra={"postgres": database_url, "redis": redis_url})
    return settings.with_overrides(
        database_url=settings.database_url or database_url,
        redis_url=settings.redis_url or redis_url,
    )


async def _bounded(awaitable: object, what: str, timeout: float = 10.0) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout)  # type: ignore[arg-type]
    except TimeoutError:
        log.warning("shutdown.timeout", extra={"step": what})


async def _close_sockets(app: web.Application) -> None:
    if keys.DEVICES in app:
        app[keys.DEVICES].close_all()


__all__ = ["RUNTIME", "NodeRuntime", "RestartBudget", "build_app", "redis_client"]
