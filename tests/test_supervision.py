"""The node supervises its embedded servers: real node processes, real PostgreSQL and Redis.

- A server that dies while the node runs is started again on the same port (the node's clients
  keep their URL), and the node serves again without being restarted.
- The servers live outside the node's process group, so a terminal's Ctrl-C reaches the node
  only: the node drains, then stops them.
- They never outlive the node: SIGKILL of the node alone ends them (the parent-death signal).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.support import Account, Api, NodeProcess, free_port

pytestmark = pytest.mark.process

SECRET = "supervision-test-secret-0123456789"


@pytest.fixture
async def launch(tmp_path: Path) -> AsyncIterator[Callable[..., NodeProcess]]:
    """Start embedded-mode node processes; each is killed with its process group afterwards,
    and any embedded server left on its data dir too."""
    started: list[NodeProcess] = []

    def make(**env: str) -> NodeProcess:
        values = {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(free_port()),
            "MESSENGER_DATA_DIR": str(tmp_path / "data"),
            "MESSENGER_JWT_SECRET": SECRET,
            "MESSENGER_BCRYPT_ROUNDS": "4",
            "MESSENGER_LOG_FORMAT": "text",
            **env,
        }
        node = NodeProcess(values, tmp_path / f"node-{len(started)}.log")
        started.append(node)
        return node.start()

    yield make
    for node in started:
        node.cleanup()
    for proc in embedded_servers(tmp_path / "data"):
        proc.kill()


def embedded_servers(data_dir: Path) -> list[psutil.Process]:
    """postgres/redis-server processes working in this data dir."""
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] in ("postgres", "redis-server") and str(data_dir) in proc.cwd():
                found.append(proc)
        except (psutil.Error, OSError):
            pass
    return found


def server_pid(data_dir: Path, kind: str) -> int:
    """The pid of the embedded redis-server, or of the postmaster (the postgres whose parent is
    not a postgres)."""
    for proc in embedded_servers(data_dir):
        with_parent = proc.parent()
        if kind == "redis" and proc.name() == "redis-server":
            return proc.pid
        if kind == "postgres" and proc.name() == "postgres":
            if with_parent is None or with_parent.name() != "postgres":
                return proc.pid
    raise AssertionError(f"no embedded {kind} under {data_dir}")


async def wait_log(node: NodeProcess, pattern: str, timeout: float = 30.0) -> re.Match[str]:
    """Wait until the node's log has a line matching `pattern` (another process: poll its log)."""
    deadline = time.monotonic() + timeout
    while True:
        if found := re.search(pattern, node.log_text()):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in {timeout}s:\n{node.log_tail()}")
        await asyncio.sleep(0.1)


async def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Pids still alive (not zombies) after `timeout`."""
    deadline = time.monotonic() + timeout

    def alive(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)  # another process's children: nothing to await


async def send_until_accepted(api: Api, who: Account, chat: str, text: str) -> int:
    """A send right after an outage may be refused with 503; a client retries with the same
    client_msg_id. Returns the stored seq."""
    for _ in range(300):
        r = await api.send(who, chat, text, cmid=f"retry-{text}")
        if r.status in (200, 201):
            return int(r.body["seq"])
        assert r.status == 503, r
        await asyncio.sleep(0.1)  # a client's retry back-off
    raise AssertionError("send never accepted after the server came back")


async def test_sigkill_of_the_node_alone_ends_its_embedded_servers(
    launch: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    node = launch()
    await node.wait_healthy()
    servers = [proc.pid for proc in embedded_servers(tmp_path / "data")]
    assert len(servers) >= 2, servers
    assert node.process is not None
    os.kill(node.process.pid, signal.SIGKILL)  # the node alone, not its process group
    await node.wait(10)
    assert await wait_gone(servers, 20) == [], "embedded servers outlived their node"


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_killed_embedded_server_is_started_again_on_its_port(
    launch: Callable[..., NodeProcess], tmp_path: Path, kind: str
) -> None:
    node = launch()
    await node.wait_healthy()
    data_dir = tmp_path / "data"
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        alice, bob = await api.account("alice"), await api.account("bob")
        chat = await api.direct(alice, bob)
        assert (await api.send(alice, chat, "before")).status == 201
        phone = await api.ws(bob, "phone")
        assert [m["text"] for m in await phone.messages(1, chat)] == ["before"]

        started = await wait_log(node, rf"embedded\.started .*server={kind} .*port=(\d+)")
        port = started.group(1)
        victim = server_pid(data_dir, kind)
        os.kill(victim, signal.SIGKILL)

        again = await wait_log(node, rf"embedded\.restarted .*server={kind} .*port=(\d+)")
        assert again.group(1) == port, "restarted on another port"
        assert server_pid(data_dir, kind) != victim
        assert re.search(rf"embedded\.died .*server={kind}", node.log_text())

        seq = await send_until_accepted(api, alice, chat, "after")
        assert seq == 2
        await node.wait_healthy(30)
        bob_laptop = await api.ws(bob, "laptop")  # everything reaches a new connection too
        got = await bob_laptop.messages(2, chat, timeout=30)
        assert [m["text"] for m in got] == ["before", "after"]
        await api.close()
    assert node.process is not None and node.process.poll() is None, "the node was restarted"
    assert await node.terminate() == 0


async def test_ctrl_c_to_the_foreground_group_drains_the_node_then_stops_its_servers(
    launch: Callable[..., NodeProcess], tmp_path: Path
) -> None:
    """A terminal's Ctrl-C is SIGINT to its whole foreground process group. The servers are in
    groups of their own, so only the node gets it; it drains and stops them itself (Redis is
    stopped with SIGTERM by its node: it must never log a SIGINT)."""
    node = launch()
    await node.wait_healthy()
    data_dir = tmp_path / "data"
    assert node.process is not None
    for proc in embedded_servers(data_dir):
        assert os.getpgid(proc.pid) != node.process.pid, "a server is in the node's group"
    async with aiohttp.ClientSession() as http:
        api = Api(http, node.url)
        alice, bob = await api.account("alice"), await api.account("bob")
        chat = await api.direct(alice, bob)
        live = await api.ws(bob, "phone")
        for i in range(10):
            assert (await api.send(alice, chat, f"m{i}")).status == 201
        got = await live.messages(10, chat)
        await live.ack(chat, got[-1]["seq"])
        node.signal_group(signal.SIGINT)
        assert await node.wait(30) == 0
        await asyncio.wait_for(live.closed.wait(), 10)
        assert live.ws.close_code == 1001
    assert embedded_servers(data_dir) == []
    log = node.log_text()
    assert "Traceback" not in log, log
    assert not re.search(r"^\S+ (ERROR|CRITICAL) ", log, re.M), log
    events = [m.group(1) for m in re.finditer(r"^\S+ \w+\s+\S+ (\S+)", log, re.M)]
    assert events.count("node.stopped") == 1, events
    stopping = events.index("node.stopping")
    assert [e for e in events[stopping:] if e == "embedded.stopped"] == [
        "embedded.stopped",
        "embedded.stopped",
    ], events
    redis_log = (data_dir / "redis" / "redis.log").read_text()
    assert "SIGINT" not in redis_log, "Redis got the terminal's Ctrl-C"
    assert "SIGTERM" in redis_log
