"""The Locust load test runs clean against a real local cluster for a few seconds: every row it
reports (REST, `WS connect`, `WS send`, `WS deliver`) has requests and no failures.

Locust runs as its own process: importing it here would monkey-patch this test process with
gevent."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, free_port

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None or importlib.util.find_spec("websocket") is None,
        reason="needs the loadtest extra (locust, websocket-client)",
    ),
]


def run_locust(host: str, nodes: list[str], out: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(REPO / "loadtest" / "locustfile.py"),
        "--headless",
        "-u",
        "10",
        "-r",
        "10",
        "-t",
        "8s",
        "--host",
        host,
        "--csv",
        str(out / "run"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "MESSENGER_LOCUST_NODES": ",".join(nodes)}
    return subprocess.run(command, cwd=out, env=env, capture_output=True, text=True, timeout=90)


def two_free_ports() -> int:
    """A port P with P+1 free too (`cluster` listens on PORT..PORT+N-1)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


async def test_locust_against_a_local_cluster_has_traffic_and_no_failures(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    """`python -m node cluster --nodes 2` as an operator runs it; Locust's users spread their
    sockets over both nodes, so deliveries cross nodes; Ctrl-C stops the whole cluster."""
    port = two_free_ports()
    env = {
        **os.environ,
        "MESSENGER_HOST": "127.0.0.1",
        "MESSENGER_PORT": str(port),
        "MESSENGER_DATA_DIR": str(tmp_path / "data"),
        "MESSENGER_DATABASE_URL": database_url,
        "MESSENGER_REDIS_URL": redis_url,
        "MESSENGER_JWT_SECRET": "locust-smoke-secret-0123456789",
        "MESSENGER_BCRYPT_ROUNDS": "4",
        "MESSENGER_AUTH_THROTTLE": "false",
        "MESSENGER_LOG_FORMAT": "text",
        "MESSENGER_LOG_LEVEL": "WARNING",
    }
    cluster = subprocess.Popen(  # noqa: ASYNC220 - starting a process does not block
        [sys.executable, "-m", "node", "cluster", "--nodes", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        assert cluster.stdout is not None
        lines = [await asyncio.to_thread(cluster.stdout.readline) for _ in range(3)]
        assert lines[2].startswith("cluster of 2 node(s) is up"), lines
        nodes = [line.split()[1] for line in lines[:2]]
        assert nodes == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"], lines

        result = await asyncio.to_thread(run_locust, nodes[0], nodes, tmp_path)
        output = f"{result.stdout}\n{result.stderr}"
        assert result.returncode == 0, output
        with (tmp_path / "run_stats.csv").open() as f:
            rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
        for (kind, name), row in rows.items():
            assert row["Failure Count"] == "0", (kind, name, output)
        names = {name for kind, name in rows if kind == "WS"}
        assert {"WS connect", "WS send", "WS deliver"} <= names, (sorted(rows), output)
        for key in [("WS", "WS send"), ("WS", "WS deliver"), ("GET", "/api/v1/chats")]:
            assert int(rows[key]["Request Count"]) > 0, (key, output)

        os.killpg(cluster.pid, signal.SIGINT)  # Ctrl-C reaches the whole process group
        assert await asyncio.to_thread(cluster.wait, 30) == 0
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait(10)
        if cluster.stdout is not None:
            cluster.stdout.close()
