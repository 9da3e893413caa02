"""The aiohttp application of a node: resources started in order and torn down in reverse.

Start: embedded servers (when no URLs are given) -> migrations (under an advisory lock) -> the
PostgreSQL pool -> Redis -> the object graph (`node.assembly`) -> membership -> the supervised
loops -> services -> routes. SIGTERM/SIGINT (aiohttp's `run_app`): the listener stops accepting,
every WebSocket is closed with 1001, chat actors drain what they hold into PostgreSQL, user
actors stop, sends still waiting are answered, queued deliveries and pending acks are flushed,
the loops stop, leases are released, connections closed, embedded servers stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

from aiohttp import web

from node import metrics
from node.assembly import NodeRuntime, assemble
from node.cluster.connection import RedisBackend
from node.cluster.identity import NodeIdentity
from node.config import Settings, resolve_jwt_secret
from node.http import keys, protocol
from node.http.middleware import error_middleware
from node.http.routes import setup_routes
from node.media.blobs.configured import open_blob_stores
from node.push.vapid import resolve_vapid_key
from node.services.auth import AuthService
from node.services.auth_throttle import AuthThrottle
from node.services.chats import ChatService
from node.services.hashing import HashingGate
from node.services.health import HealthService
from node.services.messages import MessageService
from node.services.presence import PresenceService
from node.services.ratelimit import RateLimiter
from node.services.users import UserService
from node.storage import Storage, apply_migrations, create_pool
from node.supervisor import Supervisor

log = logging.getLogger(__name__)

RUNTIME: web.AppKey[NodeRuntime] = web.AppKey("runtime")
SUPERVISOR: web.AppKey[Supervisor] = web.AppKey("supervisor")
OnFatal = Callable[[str], None]
_ON_FATAL: web.AppKey[OnFatal | None] = web.AppKey("on_fatal")


def build_app(settings: Settings, *, on_fatal: OnFatal | None = None) -> web.Application:
    """The node as an aiohttp application. `on_fatal(part)` is called when a part of the node
    cannot be restarted any more (a served node stops itself then); without it the node stays
    up with `/healthz` red."""
    protocol.install()
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[error_middleware],
        handler_args=protocol.handler_args(keepalive_timeout=settings.keepalive_timeout),
    )
    app[keys.SETTINGS] = settings
    app[_ON_FATAL] = on_fatal
    app.cleanup_ctx.append(_node_context)
    app.on_shutdown.append(_close_sockets)
    setup_routes(app)
    return app


async def _node_context(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    async with AsyncExitStack() as stack:
        supervisor = Supervisor(on_fatal=app[_ON_FATAL], max_restarts=settings.restart_budget)
        settings = await _start_embedded(settings, stack, supervisor)
        stack.push_async_callback(supervisor.close)  # the loops stop before anything they use
        identity = NodeIdentity.new(settings.node_id)

        await apply_migrations(settings.database_url or "")
        pool = await create_pool(settings.database_url or "", size=settings.db_pool_size)
        stack.push_async_callback(_bounded, pool.close(), "pool.close")
        storage = Storage.over(pool)

        redis = RedisBackend.connect(settings.redis_url or "", timeout=settings.redis_timeout)
        stack.push_async_callback(redis.aclose)
        await redis.client.ping()
        pubsub_redis = RedisBackend.connect(
            settings.redis_url or "", timeout=settings.redis_timeout, pubsub=True
        )
        stack.push_async_callback(pubsub_redis.aclose)

        vapid = resolve_vapid_key(settings)
        blobs = await stack.enter_async_context(open_blob_stores(settings, pool))
        # the node's loops stop after the drain below and before the clients and stores they
        # use close (the second close, at the end, is a no-op)
        stack.push_async_callback(supervisor.close)
        runtime = assemble(settings, identity, storage, redis, pubsub_redis, vapid, blobs)
        await runtime.membership.beat()
        stack.push_async_callback(runtime.membership.leave)
        stack.push_async_callback(runtime.directory.release_all)
        stack.push_async_callback(runtime.cursors.flush)
        stack.push_async_callback(runtime.outbound.drain)
        stack.callback(runtime.forwarder.fail_all)
        stack.callback(runtime.placement.fail_all)
        stack.push_async_callback(runtime.users.close, settings.shutdown_timeout)
        stack.push_async_callback(runtime.chats.close, settings.shutdown_timeout)
        for name, loop in runtime.loops():
            await supervisor.start(name, loop)
        await asyncio.wait_for(runtime.subscriber.subscribed.wait(), settings.redis_timeout * 5)

        limiter = RateLimiter(burst=settings.rate_burst, rate=settings.rate_per_second)
        app[RUNTIME] = runtime
        app[SUPERVISOR] = supervisor
        metrics.bind_runtime(runtime)
        app[keys.DEVICES] = runtime.hub
        gate = HashingGate(settings.hash_workers, settings.hash_queue, fair=settings.auth_throttle)
        stack.callback(gate.close)
        app[keys.AUTH] = AuthService(
            storage,
            settings,
            resolve_jwt_secret(settings),
            gate=gate,
            throttle=AuthThrottle(redis.client, settings),
        )
        app[keys.USERS] = UserService(storage)
        app[keys.CHATS] = ChatService(storage)
        app[keys.MEDIA] = runtime.media
        app[keys.MESSAGES] = MessageService(
            storage, runtime.placement, limiter, runtime.media, reply_timeout=settings.send_timeout
        )
        app[keys.PRESENCE] = PresenceService(storage, runtime.presence)
        app[keys.PUSH] = runtime.push.subscriptions
        app[keys.HEALTH] = HealthService(
            storage, redis.client, settings.node_id, supervisor.failing
        )
        log.info(
            "node.started",
            extra={"node": identity.incarnation, "host": settings.host, "port": settings.port},
        )
        yield
        log.info("node.stopping", extra={"node": identity.incarnation})


async def _start_embedded(
    settings: Settings, stack: AsyncExitStack, supervisor: Supervisor
) -> Settings:
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
    await supervisor.start("embedded", servers.watch().run)  # stopped before the servers are
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


__all__ = ["RUNTIME", "SUPERVISOR", "NodeRuntime", "build_app"]
