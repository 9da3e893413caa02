"""Real node processes as a cluster, and what cluster tests ask of PostgreSQL: shared by the tests
over one Redis and over a Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from node.embedded import EmbeddedError
from node.embedded.redis_cluster import system_redis
from tests.support import Account, Api, NodeProcess, free_port

SECRET = "cluster-test-secret-0123456789"


def redis_cluster_available() -> None:
    """Skip (fail in CI) when the system's redis-server and redis-cli are missing."""
    try:
        system_redis("redis-server"), system_redis("redis-cli")
    except EmbeddedError:
        if os.environ.get("CI"):
            pytest.fail("Redis Cluster tests need redis-server 7 in CI (./dev test installs it)")
        pytest.skip("redis-server (7) is not installed: the Redis Cluster tests skip")


class Cluster:
    def __init__(self, tmp_path: Path, database_url: str, redis_url: str) -> None:
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.redis_url = redis_url
        self.nodes: list[NodeProcess] = []

    async def start(self, count: int = 2) -> list[NodeProcess]:
        started = [self.launch() for _ in range(count)]
        await asyncio.gather(*(n.wait_healthy() for n in started))
        return started

    def launch(self, port: int | None = None, **settings: str) -> NodeProcess:
        """A node; `settings` override the environment (e.g. MESSENGER_LEASE_TTL="6")."""
        index = len(self.nodes)
        env = {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(port or free_port()),
            "MESSENGER_NODE_ID": f"n{index}",
            "MESSENGER_DATABASE_URL": self.database_url,
            "MESSENGER_REDIS_URL": self.redis_url,
            "MESSENGER_DATA_DIR": str(self.tmp_path / f"data{index}"),
            "MESSENGER_JWT_SECRET": SECRET,
            "MESSENGER_BCRYPT_ROUNDS": "4",
            "MESSENGER_AUTH_THROTTLE": "false",
            "MESSENGER_LOG_FORMAT": "text",
            "MESSENGER_LEASE_TTL": "2",
            "MESSENGER_HEARTBEAT_INTERVAL": "0.3",
            "MESSENGER_PRESENCE_GRACE": "0.2",
            **settings,
        }
        node = NodeProcess(env, self.tmp_path / f"n{index}.log").start()
        self.nodes.append(node)
        return node

    def cleanup(self) -> None:
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                node.signal_group(signal.SIGCONT)
            node.cleanup()


async def pair(api: Api) -> tuple[Account, Account, str]:
    alice, bob = await api.account("alice"), await api.account("bob")
    return alice, bob, await api.direct(alice, bob)


async def send_until_accepted(
    api: Api, who: Account, chat: str, text: str, cmid: str
) -> dict[str, Any]:
    """Retry a send (same client_msg_id: idempotent) through a failover, as a client would."""
    async with asyncio.timeout(30):
        while True:
            r = await api.send(who, chat, text, cmid=cmid)
            if r.status in (200, 201):
                return dict(r.body)
            assert r.status == 503, r
            await asyncio.sleep(0.1)  # a client's retry back-off


async def wait_cursor(database_url: str, user_id: int, device: str, chat: int, seq: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with asyncio.timeout(5):
            while (  # noqa: ASYNC110 - polling another process's writes: no event to await
                await conn.fetchval(
                    "SELECT acked_seq FROM device_cursors"
                    " WHERE user_id = $1 AND device_id = $2 AND chat_id = $3",
                    user_id,
                    device,
                    chat,
                )
                or 0
            ) < seq:
                await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def chat_epoch(database_url: str, chat: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(await conn.fetchval("SELECT epoch FROM chats WHERE id = $1", int(chat)))
    finally:
        await conn.close()


async def message_rows(database_url: str, chat: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(
            await conn.fetch(
                "SELECT seq, epoch FROM messages WHERE chat_id = $1 ORDER BY seq", int(chat)
            )
        )
    finally:
        await conn.close()
