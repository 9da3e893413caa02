"""Test fixtures over real PostgreSQL and Redis.

`MESSENGER_TEST_DATABASE_URL` / `MESSENGER_TEST_REDIS_URL` name servers to use (CI sets them);
without them the session starts throwaway embedded servers. The schema is migrated once into a
template database; every test gets its own clone and a flushed Redis database.

Tests of the Redis layer run against one Redis and against a Redis Cluster (`any_redis_url`,
`any_redis`): the session starts a throwaway local Redis Cluster (three masters with a replica
each, from the system's redis-server 7) the first time one asks for it, flushed per test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from node.app import build_app
from node.cluster.connection import RedisBackend
from node.config import Settings
from node.embedded.redis_cluster import LocalRedisCluster
from node.storage import Storage, apply_migrations, create_pool
from tests.cluster_support import Cluster, redis_cluster_available
from tests.support import Api, with_database

TEST_REDIS_DB = 9


def pytest_configure(config: pytest.Config) -> None:
    """A basetemp of the session's own, outside /tmp/pytest-of-<user>: every pytest session
    that starts strips the group and other bits from that shared root, which cuts an embedded
    PostgreSQL run as the unprivileged `pgserver` user (when tests run as root) off from its
    data under `tmp_path` in the middle of a test. Removed at the end of the session."""
    if config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix="messenger-pytest-")
        config.stash[_OWN_BASETEMP] = Path(config.option.basetemp)


def pytest_unconfigure(config: pytest.Config) -> None:
    if own := config.stash.get(_OWN_BASETEMP, None):
        shutil.rmtree(own, ignore_errors=True)


_OWN_BASETEMP = pytest.StashKey[Path]()


@pytest.fixture(scope="session")
def servers_dir() -> Iterator[Path]:
    """Where the session's throwaway servers live: a directory of its own, not pytest's
    rotating basetemp (a concurrent pytest session may delete an old basetemp under them)."""
    path = Path(tempfile.mkdtemp(prefix="messenger-test-servers-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url(servers_dir: Path) -> Iterator[str]:
    url = os.environ.get("MESSENGER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    from node.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(servers_dir / "postgres")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def redis_server_url(servers_dir: Path) -> Iterator[str]:
    url = os.environ.get("MESSENGER_TEST_REDIS_URL")
    if url:
        yield url
        return
    from node.embedded import EmbeddedRedis

    server = EmbeddedRedis(servers_dir / "redis", persistent=False)
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(servers_dir: Path) -> Iterator[LocalRedisCluster]:
    """The session's local Redis Cluster (own ports and directory, stopped at the end)."""
    redis_cluster_available()
    cluster = LocalRedisCluster(servers_dir / "redis-cluster", node_timeout_ms=3000)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: LocalRedisCluster) -> str:
    """The session's Redis Cluster, emptied (every master flushed)."""
    redis_cluster.wait_ok()
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture(params=["single", "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """A flushed Redis: one Redis, then a Redis Cluster (the test runs once with each)."""
    name = "redis_url" if request.param == "single" else "redis_cluster_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
async def any_redis(any_redis_url: str) -> AsyncIterator[RedisBackend]:
    """A RedisBackend over `any_redis_url`, as a node would make it."""
    backend = RedisBackend.connect(any_redis_url, timeout=5.0)
    yield backend
    await backend.aclose()


@pytest.fixture(scope="session")
async def template_database(pg_admin_url: str) -> AsyncIterator[str]:
    name = f"msgr_tpl_{os.getpid()}"
    admin = await asyncpg.connect(pg_admin_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
        await apply_migrations(with_database(pg_admin_url, name))
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def database_factory(
    pg_admin_url: str, template_database: str
) -> AsyncIterator[Callable[[], Any]]:
    """Make fresh databases: migrated clones of the template, or empty ones with
    `migrated=False`; all dropped after the test."""
    made: list[str] = []
    admin = await asyncpg.connect(pg_admin_url)

    async def make(*, migrated: bool = True) -> str:
        name = f"msgr_t_{uuid.uuid4().hex[:12]}"
        template = f' TEMPLATE "{template_database}"' if migrated else ""
        await admin.execute(f'CREATE DATABASE "{name}"{template}')
        made.append(name)
        return with_database(pg_admin_url, name)

    try:
        yield make
    finally:
        for name in made:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def database_url(database_factory: Callable[[], Any]) -> str:
    url: str = await database_factory()
    return url


@pytest.fixture
async def redis_url(redis_server_url: str) -> AsyncIterator[str]:
    url = redis_server_url.rsplit("/", 1)[0] + f"/{TEST_REDIS_DB}"
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushdb()
        yield url
        await client.flushdb()  # may fail when the test left Redis down: still close the client
    finally:
        await client.aclose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[Storage]:
    pool = await create_pool(database_url, size=4)
    yield Storage.over(pool)
    await pool.close()


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": "test-secret-0123456789abcdef",
        "bcrypt_rounds": 4,
        # tests sign up and log in many users from one address, as a load test does; the
        # throttle's own tests turn it on
        "auth_throttle": False,
        "node_id": f"test-{uuid.uuid4().hex[:6]}",
        "data_dir": tmp_path / "data",
        "log_format": "text",
        "log_level": "INFO",
        "presence_grace": 0.2,
        "presence_interval": 0.2,
        "ack_flush_interval": 0.05,
        "lease_ttl": 3.0,
        "heartbeat_interval": 0.5,
        "shutdown_timeout": 5.0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    return make_settings(tmp_path, database_url=database_url, redis_url=redis_url)


@pytest.fixture
async def node_factory(
    database_factory: Callable[[], Any], redis_url: str
) -> AsyncIterator[Callable[[Settings], Any]]:
    """Start in-process nodes (real aiohttp servers on real ports); all stopped after the test,
    before its databases are dropped (hence the dependencies)."""
    servers: list[TestServer] = []

    async def start(settings: Settings, **app_options: Any) -> TestServer:
        server = TestServer(build_app(settings, **app_options), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@pytest.fixture
async def node_api(
    node_factory: Callable[[Settings], Any],
    http: aiohttp.ClientSession,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
) -> AsyncIterator[Callable[..., Any]]:
    """Start a node with other settings (same database and Redis) and get (server, Api) for it:
    `server, api = await node_api(backlog_limit=5)`. The clients' sockets are closed after the
    test, before the nodes stop."""
    made: list[Api] = []

    async def make(
        *, app_options: dict[str, Any] | None = None, **overrides: Any
    ) -> tuple[TestServer, Api]:
        settings = make_settings(
            tmp_path / f"node{len(made)}",
            database_url=database_url,
            redis_url=redis_url,
            **overrides,
        )
        server: TestServer = await node_factory(settings, **(app_options or {}))
        api = Api(http, str(server.make_url("")))
        made.append(api)
        return server, api

    yield make
    for api in made:
        await api.close()


@pytest.fixture
async def node(node_factory: Callable[[Settings], Any], settings: Settings) -> TestServer:
    server: TestServer = await node_factory(settings)
    return server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def api(node: TestServer, http: aiohttp.ClientSession) -> AsyncIterator[Api]:
    client = Api(http, str(node.make_url("")))
    yield client
    await client.close()


@pytest.fixture
async def cluster_factory(tmp_path: Path) -> AsyncIterator[Callable[[str, str], Cluster]]:
    """Start clusters of real node processes; every node is killed after the test."""
    made: list[Cluster] = []

    def make(database_url: str, redis_url: str) -> Cluster:
        cluster = Cluster(tmp_path, database_url, redis_url)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.cleanup()
