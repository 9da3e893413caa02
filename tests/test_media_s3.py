"""Media in an S3-compatible store: a real node against moto's S3 server, started as its own
process for the session and stopped after it. Each test gets a bucket of its own."""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from PIL import Image

from node.app import RUNTIME
from node.media.blobs.s3 import PART_SIZE, WINDOW
from tests.media_support import (
    SECRET,
    download,
    jpeg_with_gps,
    random_bytes,
    send_with,
    uploaded,
)
from tests.support import free_port

KEYS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Poll another process's port (there is no event to wait on across processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("moto server did not start")


@pytest.fixture
async def s3(s3_endpoint: str) -> AsyncIterator[Any]:
    session = get_session()
    async with session.create_client(
        "s3", endpoint_url=s3_endpoint, region_name="us-east-1", **KEYS
    ) as client:
        yield client


@pytest.fixture
async def bucket(s3: Any) -> str:
    name = f"media-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3_settings(s3_endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "media_store": "s3",
        "media_s3_endpoint": s3_endpoint,
        "media_s3_bucket": bucket,
        "media_s3_access_key_id": "test",
        "media_s3_secret_access_key": "test",
    }


async def keys(s3: Any, bucket: str) -> set[str]:
    answer = await s3.list_objects_v2(Bucket=bucket)
    return {item["Key"] for item in answer.get("Contents", [])}


async def test_upload_and_ranges_in_s3(
    node_api: Callable[..., Any], s3_settings: dict[str, Any], s3: Any, bucket: str
) -> None:
    _server, api = await node_api(**s3_settings)
    alice = await api.account()
    data = random_bytes(PART_SIZE + 3 * WINDOW + 123)  # a multipart upload, several windows
    media = await uploaded(api, alice, data)
    assert media["sha256"] == hashlib.sha256(data).hexdigest()
    assert await keys(s3, bucket) == {f"media/{media['id']}/original"}
    stored = await s3.get_object(Bucket=bucket, Key=f"media/{media['id']}/original")
    async with stored["Body"] as body:
        assert await body.read() == data
    got = await download(api, alice, media["id"])
    assert got.status == 200 and got.body == data
    start = WINDOW - 10
    part = await download(api, alice, media["id"], headers={"Range": f"bytes={start}-"})
    assert part.status == 206 and part.body == data[start:]
    tail = await download(api, alice, media["id"], headers={"Range": "bytes=-5"})
    assert tail.body == data[-5:]
    small = random_bytes(1000)  # one PUT
    assert (await download(api, alice, (await uploaded(api, alice, small))["id"])).body == small


async def test_image_and_preview_in_s3(
    node_api: Callable[..., Any], s3_settings: dict[str, Any], s3: Any, bucket: str
) -> None:
    _server, api = await node_api(**s3_settings)
    alice = await api.account()
    media = await uploaded(api, alice, jpeg_with_gps(), "image/jpeg")
    assert media["has_preview"] is True
    assert await keys(s3, bucket) == {
        f"media/{media['id']}/original",
        f"media/{media['id']}/preview",
    }
    stored = (await download(api, alice, media["id"])).body
    assert SECRET.encode() not in stored and dict(Image.open(io.BytesIO(stored)).getexif()) == {}
    preview = await download(api, alice, media["id"], preview=True)
    assert preview.status == 200 and Image.open(io.BytesIO(preview.body)).format == "WEBP"


async def test_two_nodes_share_the_bucket(
    node_api: Callable[..., Any], s3_settings: dict[str, Any]
) -> None:
    _a, api_a = await node_api(**s3_settings)
    _b, api_b = await node_api(**s3_settings)
    alice, bob = await api_a.account(), await api_a.account()
    chat = await api_a.direct(alice, bob)
    data = random_bytes(2 * WINDOW + 7)
    media = await uploaded(api_a, alice, data)
    assert (await download(api_b, bob, media["id"])).status == 404
    assert (await send_with(api_a, alice, chat, [media["id"]])).status == 201
    got = await download(api_b, bob, media["id"])
    assert got.status == 200 and got.body == data


async def test_media_kept_in_postgres_stay_readable_after_a_switch_to_s3(
    node_api: Callable[..., Any], s3_settings: dict[str, Any], s3: Any, bucket: str
) -> None:
    _old, api_old = await node_api()  # the default store
    _new, api_new = await node_api(**s3_settings)
    alice = await api_old.account()
    before = random_bytes(700_000)
    media = await uploaded(api_old, alice, before)
    assert await keys(s3, bucket) == set()
    assert (await download(api_new, alice, media["id"])).body == before
    after = await uploaded(api_new, alice, random_bytes(10))
    assert await keys(s3, bucket) == {f"media/{after['id']}/original"}


async def test_cleanup_deletes_the_objects(
    node_api: Callable[..., Any], s3_settings: dict[str, Any], s3: Any, bucket: str
) -> None:
    server, api = await node_api(**s3_settings)
    alice, bob = await api.account(), await api.account()
    chat = await api.direct(alice, bob)
    kept = await uploaded(api, alice, jpeg_with_gps(), "image/jpeg")
    dropped = await uploaded(api, alice, jpeg_with_gps(), "image/jpeg")
    assert (await send_with(api, alice, chat, [kept["id"]])).status == 201
    assert len(await keys(s3, bucket)) == 4
    assert await server.app[RUNTIME].media_cleanup.sweep(age=0) == 1
    assert await keys(s3, bucket) == {
        f"media/{kept['id']}/original",
        f"media/{kept['id']}/preview",
    }
    assert (await download(api, alice, dropped["id"])).status == 404
    assert (await download(api, bob, kept["id"])).status == 200
