"""What the bench runs on: PostgreSQL + Redis, and node (or echo) processes.

* `Infra`: given URLs, or embedded PostgreSQL and Redis (node.embedded) started once under a temp
  dir. Each run gets a fresh database (CREATE DATABASE on that server, dropped afterwards) and a
  flushed Redis DB.
* `ServerGroup`: child processes (`python -m node serve`, or the echo relay), each in its own
  process group (start_new_session), stopped by group: SIGTERM, then SIGKILL.
* `Target`: per run, fresh servers on Infra (or the running nodes given by URL).

Their CPU, memory and kernel counters: loadtest/procstats.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import psutil  # type: ignore[import-untyped,unused-ignore]

if TYPE_CHECKING:
    from node.embedded import EmbeddedServers

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "localhost", "::1", ""}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def with_path(url: str, path: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, path, p.query, p.fragment))


def listener_pids(url: str) -> list[int]:
    """The process listening on a loopback URL's port (best effort; [] when unknown)."""
    p = urlsplit(url)
    if p.hostname not in LOOPBACK or not p.port:
        return []
    with contextlib.suppress(psutil.Error, OSError):
        return sorted(
            {
                c.pid
                for c in psutil.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN and c.laddr.port == p.port and c.pid
            }
        )
    return []


# ------------------------------------------------------------------------ PostgreSQL and Redis
class Infra:
    """PostgreSQL and Redis: the given URLs, or embedded servers under a temp dir (started once)."""

    def __init__(self, database_url: str | None, redis_url: str | None) -> None:
        self.database_url, self.redis_url = database_url, redis_url
        self.embedded: EmbeddedServers | None = None
        self.tmp: Path | None = None
        self._pids: list[int] = []

    def start(self) -> Infra:
        given = [u for u in (self.database_url, self.redis_url) if u]
        if len(given) < 2:
            from node.embedded import EmbeddedServers

            self.tmp = Path(tempfile.mkdtemp(prefix="msgr-bench-"))
            self.embedded = EmbeddedServers(
                self.tmp / "infra", postgres=self.database_url is None, redis=self.redis_url is None
            )
            db, redis = self.embedded.start()
            self.database_url = self.database_url or db
            self.redis_url = self.redis_url or redis
            self._pids = [
                s.pid
                for s in (self.embedded.postgres, self.embedded.redis)
                if s is not None and s.pid
            ]
        for url in given:  # servers of someone else's: CPU only if they listen on this machine
            self._pids += listener_pids(url)
        return self

    def pids(self) -> list[int]:
        """PostgreSQL postmaster + Redis (their children, the backends, are found per sample)."""
        return list(self._pids)

    def fresh_database(self) -> str:
        """A new empty database on the server (the node migrates it); flushes the Redis DB."""
        assert self.database_url and self.redis_url
        name = f"bench_{secrets.token_hex(5)}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        asyncio.run(self._flush())
        return with_path(self.database_url, "/" + name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        if name.startswith("bench_"):
            with contextlib.suppress(Exception):
                asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _admin(self, sql: str) -> None:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def _flush(self) -> None:
        import redis.asyncio as aioredis

        assert self.redis_url
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            await client.flushdb()
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.embedded is not None:
            self.embedded.stop()
            self.embedded = None
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


# ------------------------------------------------------------------------ server processes
class ServerGroup:
    """Child server processes, each its own process group, logs under `logdir`."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []
        self.logs: list[Path] = []

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], port: int) -> str:
        log_path = self.logdir / f"{name}.log"
        with log_path.open("ab") as log:
            p = subprocess.Popen(
                cmd,
                env=env,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(p)
        self.logs.append(log_path)
        url = f"http://127.0.0.1:{port}"
        self.urls.append(url)
        return url

    def start_nodes(
        self, count: int, database_url: str, redis_url: str, extra_env: dict[str, str]
    ) -> list[str]:
        secret = secrets.token_urlsafe(32)
        for n in range(count):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("MESSENGER_")}
            env.update(
                {
                    "MESSENGER_HOST": "127.0.0.1",
                    "MESSENGER_PORT": str(port),
                    "MESSENGER_DATABASE_URL": database_url,
                    "MESSENGER_REDIS_URL": redis_url,
                    "MESSENGER_DATA_DIR": str(self.logdir / f"data-{n}"),
                    "MESSENGER_JWT_SECRET": secret,
                    "MESSENGER_NODE_ID": f"bench-{'ab'[n % 2]}{n}",
                    "MESSENGER_BCRYPT_ROUNDS": "4",
                    "MESSENGER_AUTH_THROTTLE": "false",
                    "MESSENGER_LOG_LEVEL": "WARNING",
                    **extra_env,
                }
            )
            self.spawn(f"node-{n}", [sys.executable, "-m", "node", "serve"], env, port)
        return self.urls

    def start_echo(self) -> list[str]:
        port = free_port()
        self.spawn(
            "echo",
            [sys.executable, "-m", "loadtest.echo", "--port", str(port)],
            dict(os.environ),
            port,
        )
        return self.urls

    def wait_healthy(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        for proc, url, log in zip(self.procs, self.urls, self.logs, strict=True):
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(
                        f"{url} did not become healthy (exit code {proc.poll()}); {log}:\n{tail}"
                    )
                time.sleep(0.1)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None]

    def kill(self, n: int) -> None:
        """SIGKILL server n's process group (a node dying without a word)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[n].pid, signal.SIGKILL)
        self.procs[n].wait(10)

    def count_in_logs(self, text: str) -> int:
        """Lines of the servers' logs that contain `text`."""
        count = 0
        for log in self.logs:
            with contextlib.suppress(OSError):
                count += sum(text in line for line in log.read_text(errors="replace").splitlines())
        return count

    def log_errors(self) -> int:
        return len(self.error_lines())

    def error_lines(self) -> list[str]:
        """The servers' log lines at error level or above, and traceback heads."""
        found = []
        for log in self.logs:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    if (
                        '"level":"error"' in line
                        or '"level":"critical"' in line
                        or line.startswith("Traceback")
                    ):
                        found.append(line)
        return found

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM each process group, then SIGKILL whatever is left of it."""
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # stragglers in the group, if any
            if p.poll() is None:
                p.wait(10)


@dataclass
class RunServers:
    urls: list[str]
    pids: list[int]
    fresh: bool  # started for this run (so VmHWM is this run's peak)
    log_errors: int | None = None  # error lines in their logs, known once they stopped
    group: ServerGroup | None = None  # the processes, when started for this run
    database_url: str | None = None  # this run's database, when started for this run


class Target:
    """Where runs go: fresh node (or echo) processes per run on `Infra`, or the running nodes
    given by URL (`server_pids` / `infra_pids`, when known, for CPU and memory)."""

    def __init__(
        self,
        *,
        urls: list[str],
        server_pids: list[int],
        infra_pids: list[int],
        database_url: str | None,
        redis_url: str | None,
        echo: bool,
        node_env: dict[str, str],
        logdir: Path,
        say: Callable[[str], None],
    ) -> None:
        self.urls, self.server_pids, self._infra_pids = urls, server_pids, infra_pids
        self.database_url, self.redis_url, self.echo = database_url, redis_url, echo
        self.node_env, self.logdir, self.say = node_env, logdir, say
        self.infra: Infra | None = None

    def __enter__(self) -> Target:
        if not self.urls and not self.echo:
            given = self.database_url and self.redis_url
            self.say("starting PostgreSQL and Redis" + ("" if given else " (embedded)"))
            self.infra = Infra(self.database_url, self.redis_url).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.infra is not None:
            self.infra.stop()

    def infra_pids(self) -> list[int]:
        return self.infra.pids() if self.infra else self._infra_pids

    @contextlib.contextmanager
    def servers(self, count: int, env: dict[str, str] | None = None) -> Iterator[RunServers]:
        """The servers of one run: `count` fresh nodes on a fresh database, or the URLs.
        `env`: defaults of this workload for the nodes' environment (`--node-env` wins)."""
        if self.urls:
            if count > len(self.urls):
                raise SystemExit("cross needs two URLs in --url")
            yield RunServers(self.urls, self.server_pids, False)
            return
        group = ServerGroup(self.logdir)
        run = RunServers([], [], True, group=group)
        db = None
        try:
            if self.echo:
                group.start_echo()
            else:
                assert self.infra is not None and self.infra.redis_url
                db = self.infra.fresh_database()
                group.start_nodes(count, db, self.infra.redis_url, {**(env or {}), **self.node_env})
                run.database_url = db
            group.wait_healthy()
            run.urls, run.pids = group.urls, group.pids()
            yield run
        finally:
            group.stop()
            if db and self.infra:
                self.infra.drop_database(db)
            errors = group.error_lines()
            run.log_errors = len(errors)
            if errors:
                self.say(f"{len(errors)} error line(s) in the server logs under {self.logdir}:")
                for line in errors[:5]:
                    self.say("  " + line[:600])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False
