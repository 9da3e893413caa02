"""Embedded PostgreSQL and Redis: real processes, no mocks."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest
import redis

from node.embedded import EmbeddedError, EmbeddedRedis, EmbeddedServers, EmbeddedWatch
from tests.support import free_port

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.find_spec("pgserver")
assert _spec is not None and _spec.submodule_search_locations
PSQL = Path(next(iter(_spec.submodule_search_locations))) / "pginstall" / "bin" / "psql"


def psql(url: str, sql: str) -> str:
    done = subprocess.run(
        [str(PSQL), url, "-X", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip()


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_on(directory: Path, name: str) -> list[int]:
    """Pids of processes called ``name`` whose working directory is ``directory``."""
    pids = []
    for proc in psutil.process_iter(["name"]):
        try:
            if proc.info["name"] == name and Path(proc.cwd()) == directory.resolve():
                pids.append(proc.pid)
        except (psutil.Error, OSError):
            pass
    return pids


@pytest.fixture
def servers_factory() -> Iterator[Callable[[Path], EmbeddedServers]]:
    """Make EmbeddedServers that are stopped at the end of the test whatever happens."""
    made: list[EmbeddedServers] = []

    def make(data_dir: Path, *, postgres: bool = True, redis: bool = True) -> EmbeddedServers:
        servers = EmbeddedServers(data_dir, postgres=postgres, redis=redis, start_timeout=60)
        made.append(servers)
        return servers

    yield make
    for servers in made:
        servers.stop()


@pytest.fixture
def child_node() -> Iterator[Callable[[Path], tuple[subprocess.Popen[str], list[str]]]]:
    """Start EmbeddedServers in a child Python leading its own process group; return the
    process and what it printed: database URL, Redis URL, postmaster pid, redis-server pid."""
    children: list[subprocess.Popen[str]] = []
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from node.embedded import EmbeddedServers
        servers = EmbeddedServers(Path(sys.argv[1]), postgres=True, redis=True)
        db, rd = servers.start()
        print(db, rd, servers.postgres.pid, servers.redis.pid, flush=True)
        time.sleep(3600)
    """)

    def start(data_dir: Path) -> tuple[subprocess.Popen[str], list[str]]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(data_dir)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        children.append(child)
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 90)
        assert ready, "the child node did not print its URLs in time"
        fields = child.stdout.readline().split()
        assert len(fields) == 4, f"child node failed (exit code {child.poll()})"
        return child, fields

    yield start
    for child in children:  # the group outlives its leader when the servers were orphaned
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def test_start_stop_restart_keeps_data(
    tmp_path: Path, servers_factory: Callable[..., EmbeddedServers]
) -> None:
    (tmp_path / "node.log").write_text("unrelated\n")
    servers = servers_factory(tmp_path)
    db_url, redis_url = servers.start()
    assert db_url is not None and db_url.endswith("/messenger")
    assert redis_url is not None
    assert servers.start() == (db_url, redis_url)  # idempotent
    assert psql(db_url, "SELECT 1") == "1"
    psql(db_url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row')")
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    client.set("kept", "key")
    client.close()
    assert servers.postgres is not None and servers.redis is not None
    pg_pid, redis_pid = servers.postgres.pid, servers.redis.pid
    assert pg_pid is not None and redis_pid is not None
    # each in a session of its own: a terminal's Ctrl-C does not reach them
    assert os.getsid(pg_pid) == pg_pid and os.getsid(redis_pid) == redis_pid
    servers.stop()
    servers.stop()  # idempotent
    assert gone(pg_pid) and gone(redis_pid)
    assert (tmp_path / "node.log").read_text() == "unrelated\n"

    # a pid file naming a live process that is not our postgres must not block the start
    (servers.postgres.pgdata / "postmaster.pid").write_text(f"1\n{servers.postgres.pgdata}\n")
    db_url, redis_url = servers.start()
    assert db_url is not None and redis_url is not None
    assert psql(db_url, "SELECT v FROM kept") == "row"
    client = redis.Redis.from_url(redis_url)
    assert client.get("kept") == b"key"
    client.close()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_servers_end_with_their_node_process_group(
    tmp_path: Path,
    signum: signal.Signals,
    child_node: Callable[..., tuple[subprocess.Popen[str], list[str]]],
    servers_factory: Callable[..., EmbeddedServers],
) -> None:
    child, (db_url, redis_url, pg_pid, redis_pid) = child_node(tmp_path)
    # not in the node's group: they end because their parent did (the parent-death signal)
    assert child.pid not in (os.getpgid(int(pg_pid)), os.getpgid(int(redis_pid)))
    psql(db_url, "CREATE TABLE survived (v text); INSERT INTO survived VALUES ('row')")
    client = redis.Redis.from_url(redis_url)
    client.set("survived", "key")
    client.close()

    os.killpg(child.pid, signum)
    child.wait()
    wait_for(lambda: gone(int(pg_pid)) and gone(int(redis_pid)), 15, "the servers to exit")
    # postgres workers live in sessions of their own but follow their postmaster
    pgdata = tmp_path / "postgres" / "data"
    wait_for(lambda: not processes_on(pgdata, "postgres"), 15, "postgres workers to exit")
    assert not processes_on(tmp_path / "redis", "redis-server")

    log_path = tmp_path / "postgres" / "postgres.log"
    offset = log_path.stat().st_size
    new_db_url, new_redis_url = servers_factory(tmp_path).start()
    assert new_db_url is not None and new_redis_url is not None
    assert psql(new_db_url, "SELECT v FROM survived") == "row"
    client = redis.Redis.from_url(new_redis_url)
    assert client.get("survived") == b"key"
    client.close()
    with log_path.open() as f:
        f.seek(offset)
        recovered = "automatic recovery in progress" in f.read()
    # even under SIGKILL of the node's group the servers got their own stop signal (the
    # parent-death signal), so they shut down cleanly: nothing to recover
    assert not recovered


def test_leftovers_on_the_data_dir_are_stopped(
    tmp_path: Path, servers_factory: Callable[..., EmbeddedServers]
) -> None:
    """Servers left running on the data dir (by a node killed alone where there is no
    parent-death signal, or started by hand) are stopped before ours start."""
    first = servers_factory(tmp_path)
    db_url, _ = first.start()
    assert db_url is not None and first.postgres is not None and first.redis is not None
    psql(db_url, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row')")
    first.stop()
    leftovers = []
    for server in (first.postgres, first.redis):
        port = free_port()
        leftovers.append(
            subprocess.Popen(
                server._command(port),
                cwd=server.root,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **server._popen_user,
            )
        )
        wait_for(lambda s=server, p=port: s._is_ready(p), 60, f"a leftover {server.kind}")
    try:
        db_url2, _ = servers_factory(tmp_path).start()
        assert all(proc.poll() is not None for proc in leftovers)
        assert db_url2 is not None
        assert psql(db_url2, "SELECT v FROM kept") == "row"
    finally:
        for proc in leftovers:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def test_the_watch_ends_when_its_servers_are_stopped(tmp_path: Path) -> None:
    """Stopped on purpose is not dead: the watch lets it be and ends."""
    servers = EmbeddedServers(tmp_path, postgres=False, redis=True)
    await asyncio.to_thread(servers.start)
    try:
        watch = asyncio.create_task(servers.watch().run())
        await asyncio.to_thread(servers.stop)
        await asyncio.wait_for(watch, 10)
        assert servers.redis is not None and servers.redis.pid is None
    finally:
        await asyncio.to_thread(servers.stop)


async def test_a_killed_server_is_revived_on_its_port(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    url = await asyncio.to_thread(server.start)
    watch = asyncio.create_task(EmbeddedWatch([server]).run())
    try:
        first = server.process
        assert first is not None
        first.kill()

        def revived() -> bool:  # a new process that answers (its URL is set once it does)
            try:
                return server.process is not first and server.pid is not None and bool(server.url)
            except EmbeddedError:
                return False

        async with asyncio.timeout(30):
            while True:
                if revived():
                    break
                await asyncio.sleep(0.05)  # the watch restarts it in a thread: nothing to await
        assert server.url == url
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.close()
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)
        await asyncio.to_thread(server.stop)


def test_second_owner_of_a_data_dir_fails_fast(
    tmp_path: Path, servers_factory: Callable[..., EmbeddedServers]
) -> None:
    first = servers_factory(tmp_path, postgres=False, redis=True)
    _, redis_url = first.start()
    second = servers_factory(tmp_path, postgres=False, redis=True)
    began = time.monotonic()
    with pytest.raises(EmbeddedError, match="already in use by another node"):
        second.start()
    assert time.monotonic() - began < 2
    assert redis_url is not None
    client = redis.Redis.from_url(redis_url)
    assert client.ping()  # untouched
    client.close()
    first.stop()
    assert second.start()[1] is not None  # free once the first owner is gone


def test_non_persistent_redis_forgets_on_restart(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedRedis(tmp_path / "redis", port=port, persistent=False)
    try:
        url = server.start()
        assert url == f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url)
        client.set("volatile", "1")
        client.close()
        server.stop()
        assert server.start() == url
        client = redis.Redis.from_url(url)
        assert client.get("volatile") is None
        client.close()
    finally:
        server.stop()


def test_start_failure_reports_the_log(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedRedis(tmp_path / "redis", port=taken.getsockname()[1])
        try:
            with pytest.raises(EmbeddedError, match=r"(?s)exited with code.*in use"):
                server.start()
            assert server.pid is None
        finally:
            server.stop()
