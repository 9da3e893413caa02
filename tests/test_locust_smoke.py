"""The Locust load test runs clean against a real node for a few seconds: every row it reports
(REST, `WS connect`, `WS send`, `WS deliver`) has requests and no failures.

Locust runs as its own process: importing it here would monkey-patch this test process with
gevent."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO, NodeProcess, free_port

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        importlib.util.find_spec("locust") is None or importlib.util.find_spec("websocket") is None,
        reason="needs the loadtest extra (locust, websocket-client)",
    ),
]


def run_locust(host: str, out: Path) -> subprocess.CompletedProcess[str]:
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
    return subprocess.run(command, cwd=out, capture_output=True, text=True, timeout=90)


async def test_locust_run_has_traffic_and_no_failures(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    node = NodeProcess(
        {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(free_port()),
            "MESSENGER_DATA_DIR": str(tmp_path / "data"),
            "MESSENGER_DATABASE_URL": database_url,
            "MESSENGER_REDIS_URL": redis_url,
            "MESSENGER_JWT_SECRET": "locust-smoke-secret-0123456789",
            "MESSENGER_BCRYPT_ROUNDS": "4",
            "MESSENGER_LOG_FORMAT": "text",
            "MESSENGER_LOG_LEVEL": "WARNING",
        },
        tmp_path / "node.log",
    )
    try:
        node.start()
        await node.wait_healthy()
        result = await asyncio.to_thread(run_locust, node.url, tmp_path)
        output = f"{result.stdout}\n{result.stderr}\nnode log:\n{node.log_tail()}"
        assert result.returncode == 0, output

        with (tmp_path / "run_stats.csv").open() as f:
            rows = {(row["Type"], row["Name"]): row for row in csv.DictReader(f)}
        for (kind, name), row in rows.items():
            assert row["Failure Count"] == "0", (kind, name, output)
        names = {name for kind, name in rows if kind == "WS"}
        assert {"WS connect", "WS send", "WS deliver"} <= names, (sorted(rows), output)
        for key in [("WS", "WS send"), ("WS", "WS deliver"), ("GET", "/api/v1/chats")]:
            assert int(rows[key]["Request Count"]) > 0, (key, output)
        assert any(kind in ("GET", "POST") for kind, _ in rows), sorted(rows)
    finally:
        await node.terminate()
        node.cleanup()
