"""An exhausted Redis pool is a shortage in this process, not news about Redis: the node's
heartbeat has connections of its own and keeps the node alive through it, and a beat that cannot
get a connection is not taken for Redis being down or having lost the node's entry."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from node.app import RUNTIME
from node.cluster import keys
from node.cluster.connection import RedisBackend, pool_starved
from node.cluster.identity import NodeIdentity
from node.cluster.liveness import ClusterView
from node.cluster.membership import Membership

LOST = ("membership.redis_forgot", "membership.lapsed", "membership.redis_down")


async def hold_every_connection(client: Any, count: int) -> list[AbstractConnection]:
    pool = client.connection_pool
    return [await pool.get_connection() for _ in range(count)]


async def release(client: Any, held: list[AbstractConnection]) -> None:
    for connection in held:
        await client.connection_pool.release(connection)


async def test_a_node_whose_redis_pool_runs_dry_stays_a_live_member(
    node_api: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.cluster.membership")
    server, _ = await node_api(redis_pool_size=4, redis_timeout=0.3, heartbeat_interval=0.1)
    runtime = server.app[RUNTIME]
    held = await hold_every_connection(runtime.redis.client, 4)
    try:
        # the pool is dry for the whole wait (4 timeouts, tried twice: 2.4 s), eight times the
        # heartbeat's TTL (three intervals), while beats go on
        with pytest.raises(RedisConnectionError) as starved:
            await runtime.redis.client.ping()
        assert pool_starved(starved.value)
    finally:
        await release(runtime.redis.client, held)
    assert await runtime.membership.beat() == 1  # still registered and alive: never lapsed
    assert runtime.membership.healthy
    assert not [r for r in caplog.records if r.getMessage() in LOST], caplog.text


async def test_a_beat_without_a_free_connection_concludes_nothing_about_redis(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.cluster.membership")
    backend = RedisBackend.connect(redis_url, timeout=0.2, pool_size=1)
    lost: list[bool] = []

    async def on_lost_memory() -> None:
        lost.append(True)

    membership = Membership(
        backend,
        NodeIdentity.new("starved"),
        ClusterView(),
        interval=0.05,
        on_lost_memory=on_lost_memory,
    )
    assert await membership.beat() == 0
    membership.healthy = True
    held = await hold_every_connection(backend.client, 1)
    running = asyncio.create_task(membership.run())
    try:
        async with asyncio.timeout(5):
            while "membership.beat_starved" not in caplog.text:  # noqa: ASYNC110 - log lines
                await asyncio.sleep(0.05)
    finally:
        await release(backend.client, held)
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await backend.aclose()
    assert membership.healthy  # not taken for Redis being down
    assert not [r for r in caplog.records if r.getMessage() == "membership.redis_down"]


def test_pool_starved_is_only_the_pools_own_error() -> None:
    assert pool_starved(RedisConnectionError("No connection available."))
    assert not pool_starved(RedisConnectionError("Error 111 connecting to 127.0.0.1:6379."))
    assert not pool_starved(TimeoutError())


def threaded_membership(
    redis_url: str, name: str, *, max_stall: float, lost: list[bool]
) -> tuple[Membership, RedisBackend]:
    async def on_lost_memory() -> None:
        lost.append(True)

    backend = RedisBackend.connect(redis_url, timeout=0.5, pool_size=2)
    membership = Membership(
        backend,
        NodeIdentity.new(name),
        ClusterView(),
        interval=0.1,  # TTL 0.3 s
        on_lost_memory=on_lost_memory,
        beat_backend=lambda: RedisBackend.connect(redis_url, timeout=0.5, pool_size=2),
        max_stall=max_stall,
    )
    return membership, backend


async def wait_for_log(caplog: pytest.LogCaptureFixture, event: str) -> None:
    async with asyncio.timeout(5):
        while event not in caplog.text:  # noqa: ASYNC110 - waiting for another thread's log
            await asyncio.sleep(0.02)


async def test_a_busy_event_loop_does_not_make_the_node_look_dead(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.cluster.membership")
    lost: list[bool] = []
    membership, backend = threaded_membership(redis_url, "busy", max_stall=5.0, lost=lost)
    running = asyncio.create_task(membership.run())
    try:
        await wait_for_log(caplog, "membership.redis_ok")
        time.sleep(1.0)  # noqa: ASYNC251 - the event loop does not turn for three TTLs (a connect storm)
        await asyncio.sleep(0.3)
        assert await membership.beat() == 1  # never lapsed: the thread kept beating
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await backend.aclose()
    assert not lost
    assert not [r for r in caplog.records if r.getMessage() in LOST], caplog.text


async def test_a_hung_event_loop_stops_the_beats(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.cluster.membership")
    lost: list[bool] = []
    membership, backend = threaded_membership(redis_url, "hung", max_stall=0.3, lost=lost)
    running = asyncio.create_task(membership.run())
    try:
        await wait_for_log(caplog, "membership.redis_ok")
        time.sleep(1.5)  # noqa: ASYNC251 - hung past max_stall: the thread stops beating, the entry lapses
        await wait_for_log(caplog, "membership.lapsed")  # seen at the next beat, then recovered
        async with asyncio.timeout(5):
            while not lost:  # noqa: ASYNC110 - the recovery runs 1.5 intervals later
                await asyncio.sleep(0.02)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await backend.aclose()
    assert "membership.loop_stalled" in caplog.text


async def test_a_long_recovery_does_not_stop_the_beats(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="node.cluster.membership")
    recovering = asyncio.Event()
    backend = RedisBackend.connect(redis_url, timeout=0.5, pool_size=2)

    async def on_lost_memory() -> None:  # re-registering a whole node takes a while
        recovering.set()
        await asyncio.sleep(1.5)

    identity = NodeIdentity.new("recovering")
    membership = Membership(
        backend,
        identity,
        ClusterView(),
        interval=0.1,
        on_lost_memory=on_lost_memory,
        beat_backend=lambda: RedisBackend.connect(redis_url, timeout=0.5, pool_size=2),
        max_stall=0.5,
    )
    running = asyncio.create_task(membership.run())
    try:
        await wait_for_log(caplog, "membership.redis_ok")
        await backend.client.zrem(keys.MEMBERS, identity.incarnation)  # Redis "forgot" us
        async with asyncio.timeout(5):
            await recovering.wait()
        await asyncio.sleep(1.6)  # the recovery runs three times max_stall
        assert await membership.beat() == 1  # the thread kept beating meanwhile
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await backend.aclose()
    assert "membership.loop_stalled" not in caplog.text
    assert "membership.lapsed" not in caplog.text
