"""Real `python -m node serve` processes: graceful SIGTERM, SIGKILL with a backlog pending, and
Redis losing its memory — every confirmed message still arrives, once per connection, in order."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from node.embedded import EmbeddedRedis
from tests.support import Account, Api, NodeProcess, free_port

pytestmark = pytest.mark.process

SECRET = "process-test-secret-0123456789"


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Callable[..., NodeProcess]]:
    """Start node processes; each is killed (with its process group) after the test."""
    started: list[NodeProcess] = []

    def make(**env: str) -> NodeProcess:
        values = {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(free_port()),
            "MESSENGER_DATA_DIR": str(tmp_path / "data"),
            "MESSENGER_JWT_SECRET": SECRET,
            "MESSENGER_BCRYPT_ROUNDS": "4",
            "MESSENGER_AUTH_THROTTLE": "false",
            "MESSENGER_LOG_FORMAT": "text",
            "MESSENGER_LEASE_TTL": "2",
            "MESSENGER_HEARTBEAT_INTERVAL": "0.5",
            **env,
        }
        node = NodeProcess(values, tmp_path / f"node-{len(started)}.log")
        started.append(node)
        return node.start()

    yield make
    for node in started:
        node.cleanup()


def embedded_children(data_dir: Path) -> list[psutil.Process]:
    """postgres/redis-server processes working in this data dir (the embedded servers)."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] in ("postgres", "redis-server") and str(data_dir) in proc.cwd():
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


async def backlog_of(api: Api, receiver: Account, chat: str, count: int) -> list[dict[str, Any]]:
    ws = await api.ws(receiver, "phone")
    got = await ws.messages(count, chat, timeout=30)
    await ws.close()
    return got


async def test_sigterm_is_graceful_and_backlog_survives_restart(
    launch: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = launch()  # embedded PostgreSQL and Redis under the data dir
    await node.wait_healthy()
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        alice, bob = await api.account("alice"), await api.account("bob")
        chat = await api.direct(alice, bob)
        for i in range(20):
            assert (await api.send(alice, chat, f"m{i}")).status == 201
        live = await api.ws(alice, "laptop")
        assert await node.terminate() == 0
        await asyncio.wait_for(live.closed.wait(), 10)
        assert live.ws.close_code == 1001
    assert embedded_children(tmp_path / "data") == []

    node = launch(MESSENGER_PORT=str(node.port))
    await node.wait_healthy()
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        got = await backlog_of(api, bob, chat, 20)
        assert [m["seq"] for m in got] == list(range(1, 21))
        assert [m["text"] for m in got] == [f"m{i}" for i in range(20)]
        await api.close()
    assert await node.terminate() == 0


async def test_sigkill_with_backlog_pending_loses_nothing(
    launch: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = launch()
    await node.wait_healthy()
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        alice, bob = await api.account("alice"), await api.account("bob")
        chat = await api.direct(alice, bob)
        # bob read and acked the first 5 on his phone
        for i in range(5):
            await api.send(alice, chat, f"early{i}")
        phone = await api.ws(bob, "phone")
        early = await phone.messages(5, chat)
        await phone.ack(chat, early[-1]["seq"])
        await _wait_cursor(api, bob, "phone", chat, 5)
        await phone.close()
        # then a backlog builds up over the WebSocket while bob is away
        sender = await api.ws(alice, "laptop")
        confirmed = []
        for i in range(30):
            await sender.send_message(chat, f"late{i}")
        for _ in range(30):
            confirmed.append((await sender.next("sent"))["message"]["seq"])
        await node.kill()
    assert node.process is not None and node.process.returncode == -signal.SIGKILL
    # the servers get their stop signal from the kernel when their node dies, and shut down
    _, alive = await asyncio.to_thread(psutil.wait_procs, embedded_children(tmp_path / "data"), 20)
    assert alive == []

    node = launch(MESSENGER_PORT=str(node.port))
    await node.wait_healthy()
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        got = await backlog_of(api, bob, chat, 30)
        assert [m["seq"] for m in got] == sorted(confirmed) == list(range(6, 36))
        # unacked messages may come again on a new connection; acked ones (1..5) never do
        again = await backlog_of(api, bob, chat, 30)
        assert [m["seq"] for m in again] == list(range(6, 36))
        await api.close()


async def test_redis_restart_that_loses_memory_loses_no_message(
    launch: Callable[..., NodeProcess], tmp_path: Path, database_url: str
) -> None:
    redis_port = free_port()
    redis_server = EmbeddedRedis(tmp_path / "redis", port=redis_port, persistent=False)
    redis_url = redis_server.start()
    try:
        node = launch(MESSENGER_DATABASE_URL=database_url, MESSENGER_REDIS_URL=redis_url)
        await node.wait_healthy()
        async with aiohttp.ClientSession() as http:
            api = Api(http, node.url)
            alice, bob = await api.account("alice"), await api.account("bob")
            chat = await api.direct(alice, bob)
            for i in range(10):
                assert (await api.send(alice, chat, f"before{i}")).status == 201
            carol = await api.account("carol")
            watcher = await api.ws(carol)  # a connected device across the restart

            redis_server.stop()
            down = await api.send(alice, chat, "while-down")
            assert down.status in (201, 503), down  # durable or refused, never a hang
            redis_server.start()
            assert redis_server.url == redis_url  # same port, empty memory
            await node.wait_healthy()

            ok = await _send_until_accepted(api, alice, chat, "after")
            expected = 10 + (1 if down.status == 201 else 0) + 1
            got = await backlog_of(api, bob, chat, expected)
            assert [m["seq"] for m in got] == list(range(1, expected + 1))
            assert got[-1]["id"] == ok["id"]
            assert not watcher.closed.is_set()
            await api.close()
        assert await node.terminate() == 0
    finally:
        redis_server.stop()


async def _send_until_accepted(api: Api, who: Account, chat: str, text: str) -> dict[str, Any]:
    """After an outage a send may be refused with 503 until leases are re-established; retry
    with the same client_msg_id (idempotent) as a client would."""
    for _ in range(100):
        r = await api.send(who, chat, text, cmid="retry-after-outage")
        if r.status in (200, 201):
            return dict(r.body)
        assert r.status == 503, r
        await asyncio.sleep(0.1)  # a client's retry back-off
    raise AssertionError("send never accepted after Redis came back")


async def _wait_cursor(api: Api, who: Account, device: str, chat: str, seq: int) -> None:
    """Acks are durable within 250 ms: a new connection of that device then starts after `seq`."""
    async with asyncio.timeout(5):
        while True:
            ws = await api.ws(who, device)
            frame = await _first_message_or_none(ws)
            await ws.close()
            if frame is None or frame["message"]["seq"] > seq:
                return


async def _first_message_or_none(ws: Any) -> dict[str, Any] | None:
    try:
        frame: dict[str, Any] = await ws.next("message", timeout=0.3)
        return frame
    except TimeoutError:
        return None
