"""A first run that explains itself, with real `python -m node serve` and `cluster` processes:
one banner line, logs a person can read on a terminal (JSON elsewhere), a busy port refused
before anything starts, one signal stops a node or a cluster cleanly with exit code 0."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import psutil
import pytest

from node.logs import resolve_format
from node.serve import banner
from tests.conftest import make_settings
from tests.support import REPO, Api, free_port

pytestmark = pytest.mark.process


def node_env(tmp_path: Path, database_url: str, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
    env.update(
        {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(free_port()),
            "MESSENGER_DATA_DIR": str(tmp_path / "data"),
            "MESSENGER_DATABASE_URL": database_url,
            "MESSENGER_REDIS_URL": redis_url,
            "MESSENGER_JWT_SECRET": "first-run-secret-0123456789",
            "MESSENGER_BCRYPT_ROUNDS": "4",
            **extra,
        }
    )
    return env


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts, each leading its own group: killed with it afterwards."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def start(
    processes: list[subprocess.Popen[bytes]],
    args: list[str],
    env: dict[str, str],
    *,
    stdout: int | object = subprocess.PIPE,
    stderr: object = None,
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stdout,  # type: ignore[arg-type]
        stderr=stderr,  # type: ignore[arg-type]
        start_new_session=True,  # as a terminal's foreground job: its own process group
    )
    processes.append(proc)
    return proc


async def healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            assert proc.poll() is None, f"exited with {proc.returncode}"
            try:
                async with http.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, OSError):
                pass
            assert time.monotonic() < deadline, "not healthy in time"
            await asyncio.sleep(0.1)  # another process: nothing to await


def events(log: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.splitlines() if line.strip()]


async def test_banner_and_json_logs_when_stderr_is_not_a_terminal(
    tmp_path: Path, database_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = node_env(tmp_path, database_url, redis_url, MESSENGER_NODE_ID="banner-node")
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as err:
        node = start(processes, ["serve"], env, stderr=err)
    assert node.stdout is not None
    line = (await asyncio.wait_for(asyncio.to_thread(node.stdout.readline), 60)).decode()
    port = env["MESSENGER_PORT"]
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert f"listening on http://127.0.0.1:{port}" in line, line
    assert "data in postgresql://" in line and "redis://" in line, line
    assert "Ctrl-C" in line and str(node.pid) in line, line
    await healthy(f"http://127.0.0.1:{port}", node)
    node.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(node.wait, 30) == 0
    assert node.stdout.read() == b"", "more than one line on stdout"
    lines = events(log_path.read_text())  # every line is JSON
    assert {entry["node_id"] for entry in lines} == {"banner-node"}
    names = [entry["event"] for entry in lines]
    assert names.index("node.started") < names.index("node.stopped")


async def test_text_logs_on_a_terminal_with_the_node_id(
    tmp_path: Path, database_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = node_env(tmp_path, database_url, redis_url, MESSENGER_NODE_ID="tty-node")
    leader, follower = pty.openpty()
    try:
        node = start(processes, ["serve"], env, stdout=subprocess.DEVNULL, stderr=follower)
        await healthy(f"http://127.0.0.1:{env['MESSENGER_PORT']}", node)
        node.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(node.wait, 30) == 0
        text = await asyncio.to_thread(_drain, leader)
    finally:
        os.close(follower)
        os.close(leader)
    lines = [line for line in text.splitlines() if line.strip()]
    started = [line for line in lines if " node.started " in line]
    assert len(started) == 1 and re.match(
        r"^\d\d:\d\d:\d\d INFO +tty-node node\.started ", started[0]
    )
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    assert any(" node.stopped" in line for line in lines), lines


def _drain(fd: int) -> str:
    """What the pty holds (the process has exited: read until nothing is left)."""
    import select

    out = b""
    while select.select([fd], [], [], 0.5)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace").replace("\r\n", "\n")


def test_the_log_format_setting_wins_over_the_terminal() -> None:
    leader, follower = pty.openpty()
    try:
        with os.fdopen(os.dup(follower), "w") as tty, open(os.devnull, "w") as pipe_like:
            assert resolve_format("auto", tty) == "text"
            assert resolve_format("auto", pipe_like) == "json"
            assert resolve_format("json", tty) == "json"
            assert resolve_format("text", pipe_like) == "text"
    finally:
        os.close(follower)
        os.close(leader)


async def test_a_busy_port_fails_before_the_node_starts(
    tmp_path: Path, database_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = node_env(tmp_path, database_url, redis_url, MESSENGER_PORT=str(port))
        env.pop("MESSENGER_DATABASE_URL")  # embedded mode: must not even start its servers
        node = start(processes, ["serve"], env, stderr=subprocess.PIPE)
        out, err = await asyncio.to_thread(node.communicate, timeout=30)
    assert node.returncode == 1
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], lines
    assert not (tmp_path / "data" / "postgres").exists(), "embedded servers were started"


async def test_two_signals_still_stop_the_node_cleanly(
    tmp_path: Path, database_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Ctrl-C, then a supervisor's SIGTERM while the node drains: exit 0, `node.stopped`."""
    env = node_env(tmp_path, database_url, redis_url)
    log_path = tmp_path / "stderr.log"
    with log_path.open("wb") as err:
        node = start(processes, ["serve"], env, stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{env['MESSENGER_PORT']}"
    await healthy(url, node)
    async with aiohttp.ClientSession() as http:
        api = Api(http, url)
        alice, bob = await api.account("alice"), await api.account("bob")
        chat = await api.direct(alice, bob)
        live = await api.ws(bob, "phone")
        assert (await api.send(alice, chat, "hello")).status == 201
        await live.messages(1, chat)
        os.killpg(node.pid, signal.SIGINT)
        os.killpg(node.pid, signal.SIGTERM)
        assert await asyncio.to_thread(node.wait, 30) == 0
        await api.close()
    names = [entry["event"] for entry in events(log_path.read_text())]
    assert names.count("node.stopped") == 1, names
    assert "node.stop_in_progress" in names, names
    assert not [e for e in events(log_path.read_text()) if e["level"] in ("error", "critical")]


async def test_one_signal_stops_a_cluster_cleanly(
    tmp_path: Path, database_url: str, redis_url: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    """Ctrl-C to the cluster's process group: the nodes are in groups of their own, so each gets
    exactly one signal (the cluster's), drains, logs `node.stopped`; every exit code is 0."""
    port = free_port()
    while True:  # two consecutive free ports
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
                break
            except OSError:
                port = free_port()
    env = node_env(tmp_path, database_url, redis_url, MESSENGER_PORT=str(port))
    log_path = tmp_path / "cluster.log"
    with log_path.open("wb") as err:
        cluster = start(processes, ["cluster", "--nodes", "2"], env, stderr=err)
    assert cluster.stdout is not None
    lines = [
        (await asyncio.wait_for(asyncio.to_thread(cluster.stdout.readline), 60)).decode()
        for _ in range(3)
    ]
    assert lines[2].startswith("cluster of 2 node(s) is up"), lines
    nodes = psutil.Process(cluster.pid).children()
    assert len(nodes) == 2
    for child in nodes:
        assert os.getpgid(child.pid) != cluster.pid, "a node shares the cluster's process group"
    os.killpg(cluster.pid, signal.SIGINT)
    assert await asyncio.to_thread(cluster.wait, 60) == 0
    log = log_path.read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    for node_id in ("node-1", "node-2"):
        mine = [e["event"] for e in entries if e.get("node_id") == node_id]
        assert mine.count("node.stop_requested") == 1, (node_id, mine)
        assert "node.stop_in_progress" not in mine, (node_id, mine)
        assert mine.count("node.stopped") == 1, (node_id, mine)
    assert "exited with code" not in log, log


def test_the_banner_names_the_data_and_hides_credentials(tmp_path: Path) -> None:
    mixed = make_settings(
        tmp_path, database_url=None, redis_url="redis://user:secret@cache.example:6380/2"
    )
    line = banner(mixed, ("::1", 9000), 4321)
    assert line == (
        f"node {mixed.node_id} listening on http://[::1]:9000; data in "
        f"{(tmp_path / 'data').resolve()} (embedded PostgreSQL) and "
        "redis://cache.example:6380/2; Ctrl-C or kill 4321 stops it"
    )
    given = make_settings(
        tmp_path,
        database_url="postgresql://app:pw@db.example/messenger?sslmode=require",
        redis_url="redis://cache.example:6379/0",
    )
    assert "data in postgresql://db.example/messenger and redis://cache.example:6379/0;" in (
        banner(given, ("127.0.0.1", 8080), 1)
    )
