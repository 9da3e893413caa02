"""`python -m node cluster --nodes N`: N node processes on one machine sharing one PostgreSQL and
one Redis (embedded under the data dir unless URLs are given), on ports PORT..PORT+N-1.

The embedded servers belong to this process; the nodes are its children, each in a process
group of its own (`node.childproc`): a terminal's Ctrl-C reaches this process only, which sends
each node exactly one SIGTERM, waits for them to drain, then stops the servers. The exit code is
0 when every node stopped cleanly. Nodes and servers get a stop signal from the kernel if this
process dies (Linux), so none outlives it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from types import FrameType

from node.childproc import spawn
from node.config import ENV_PREFIX, Settings, resolve_jwt_secret


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def run_cluster(settings: Settings, nodes: int) -> int:
    servers = None
    database_url, redis_url = settings.database_url, settings.redis_url
    if settings.embedded:
        from node.embedded import EmbeddedServers

        servers = EmbeddedServers(
            settings.data_dir,
            postgres=database_url is None,
            redis=redis_url is None,
            start_timeout=settings.embedded_start_timeout,
        )
        started = servers.start()
        database_url = database_url or started[0]
        redis_url = redis_url or started[1]
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    base_env = {
        **os.environ,
        f"{ENV_PREFIX}DATABASE_URL": database_url or "",
        f"{ENV_PREFIX}REDIS_URL": redis_url or "",
        f"{ENV_PREFIX}JWT_SECRET": resolve_jwt_secret(settings),
        f"{ENV_PREFIX}DATA_DIR": str(settings.data_dir),
    }
    named = f"{ENV_PREFIX}NODE_ID" in os.environ
    children: list[tuple[str, str, subprocess.Popen[bytes]]] = []
    try:
        for i in range(nodes):
            node_id = f"{settings.node_id}-{i + 1}" if named else f"node-{i + 1}"
            port = settings.port + i
            env = {**base_env, f"{ENV_PREFIX}PORT": str(port), f"{ENV_PREFIX}NODE_ID": node_id}
            process = spawn(  # its banner would repeat ours; its logs go to our stderr
                [sys.executable, "-m", "node", "serve"], env=env, stdout=subprocess.DEVNULL
            )
            children.append((node_id, f"http://{settings.host}:{port}", process))
        deadline = time.monotonic() + settings.embedded_start_timeout
        for node_id, url, process in children:
            while not _healthy(url):
                if process.poll() is not None or stop.is_set() or time.monotonic() > deadline:
                    print(f"{node_id} did not start (exit code {process.poll()})", file=sys.stderr)
                    return 1
                stop.wait(0.2)
            print(f"{node_id} {url}", flush=True)
        where = f"{settings.data_dir.resolve()} (embedded)" if servers else "the given URLs"
        print(
            f"cluster of {nodes} node(s) is up; data in {where}; "
            f"Ctrl-C or kill {os.getpid()} stops it",
            flush=True,
        )
        while not stop.wait(0.5):
            for node_id, _, process in children:
                if process.poll() is not None:
                    print(f"{node_id} exited with code {process.returncode}", file=sys.stderr)
                    return 1
        return 0 if _stop_nodes(children, settings.shutdown_timeout + 5) else 1
    finally:
        _stop_nodes(children, settings.shutdown_timeout + 5)
        if servers is not None:
            servers.stop()


def _stop_nodes(children: list[tuple[str, str, subprocess.Popen[bytes]]], timeout: float) -> bool:
    """One SIGTERM to each node still running, then wait (SIGKILL past `timeout`); True when
    every node exited with code 0. Idempotent."""
    running = [child for child in children if child[2].poll() is None]
    for _, _, process in running:
        process.send_signal(signal.SIGTERM)
    for node_id, _, process in running:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.returncode != 0:
            print(f"{node_id} exited with code {process.returncode}", file=sys.stderr)
    return all(process.returncode == 0 for _, _, process in children)
