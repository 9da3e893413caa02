"""Property-based fuzzing of the REST API from its own OpenAPI document, against a real node.

Schemathesis generates requests for every operation of the document the node serves (valid ones
and, in negative mode, ones that break the schema), sends them to a node process over HTTP with a
real user's bearer token, and checks each answer: never a 5xx, only statuses the document lists
for that operation, the documented content type, and a body matching the documented schema.

The run is short and repeatable: `MAX_EXAMPLES` per operation and mode, derandomized (the same
cases every run), no example database. It is part of `./dev test` (and so of CI); its case count
and time are printed (`pytest -s`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import redis.asyncio as aioredis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from node.http.openapi import build_openapi
from node.http.routes import ENDPOINTS
from tests.support import PASSWORD, NodeProcess, free_port, with_database

MAX_EXAMPLES = 40
FUZZ_REDIS_DB = 10  # on the session's Redis, beside the per-test database (9)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

SCHEMA = schemathesis.openapi.from_dict(build_openapi(ENDPOINTS))
SCHEMA.config.generation.update(modes=["positive", "negative"])


@dataclass
class Target:
    url: str
    token: str
    cases: int = 0


@pytest.fixture(scope="module")
async def fuzz_node(
    pg_admin_url: str,
    template_database: str,
    redis_server_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Target]:
    """A node process (throttling on, as deployed) over its own database and Redis database,
    and a user of it."""
    name = f"msgr_fuzz_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
    redis_url = redis_server_url.rsplit("/", 1)[0] + f"/{FUZZ_REDIS_DB}"
    redis = aioredis.Redis.from_url(redis_url)
    await redis.flushdb()
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    node = NodeProcess(
        {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(free_port()),
            "MESSENGER_DATABASE_URL": with_database(pg_admin_url, name),
            "MESSENGER_REDIS_URL": redis_url,
            "MESSENGER_DATA_DIR": str(tmp / "data"),
            "MESSENGER_JWT_SECRET": "fuzz-secret-0123456789abcdef",
            "MESSENGER_BCRYPT_ROUNDS": "4",
            "MESSENGER_LOG_FORMAT": "text",
            "MESSENGER_LOG_LEVEL": "WARNING",
        },
        tmp / "node.log",
    ).start()
    started = time.monotonic()
    try:
        await node.wait_healthy()
        async with aiohttp.ClientSession() as http:
            body = {"username": "fuzzer", "password": PASSWORD}
            async with http.post(f"{node.url}/api/v1/auth/register", json=body) as r:
                assert r.status == 201, await r.text()
            async with http.post(f"{node.url}/api/v1/auth/login", json=body) as r:
                assert r.status == 200, await r.text()
                token = (await r.json())["access_token"]
        target = Target(node.url, token)
        yield target
        print(
            f"\nfuzz: {target.cases} cases over {len(SCHEMA)} operations"
            f" in {time.monotonic() - started:.1f} s"
        )
        assert "Traceback" not in node.log_text(), node.log_tail()
    finally:
        await node.terminate()
        node.cleanup()
        await redis.flushdb()
        await redis.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
def target(fuzz_node: Target) -> Iterator[Target]:
    yield fuzz_node


@SCHEMA.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_documented(case: schemathesis.Case, target: Target) -> None:
    target.cases += 1
    response = case.call(base_url=target.url, headers={"Authorization": f"Bearer {target.token}"})
    case.validate_response(response, checks=CHECKS)
