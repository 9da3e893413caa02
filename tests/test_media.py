"""Media over a real node and a real PostgreSQL (the default store): uploads typed from their
bytes, images cleaned, downloads with ranges and safety headers, the access rule, limits,
attachments on messages (REST and WebSocket), two nodes, and the cleanup of unattached uploads."""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from PIL import Image

from node.app import RUNTIME
from node.http import schemas
from node.storage import Storage
from tests.media_support import (
    HTML,
    PDF,
    SECRET,
    SVG,
    chunked,
    download,
    jpeg_with_gps,
    png,
    random_bytes,
    send_with,
    upload,
    uploaded,
)
from tests.support import Account, Api, NodeProcess, assert_error, free_port


@pytest.fixture
async def trio(api: Api) -> tuple[Account, Account, str]:
    """alice and bob in a direct chat"""
    alice, bob = await api.account(), await api.account()
    return alice, bob, await api.direct(alice, bob)


# --- upload: type, hash, images ----------------------------------------------------------------


async def test_upload_answers_the_media_object(api: Api) -> None:
    alice = await api.account()
    data = random_bytes(100_000)
    r = await upload(api, alice, data, "application/zip")
    assert r.status == 201, r
    media = schemas.Media.model_validate(r.body)
    assert media.size == len(data) and media.sha256 == hashlib.sha256(data).hexdigest()
    assert media.content_type == "application/octet-stream"
    assert media.has_preview is False and "width" not in r.body and "height" not in r.body
    got = await download(api, alice, media.id)
    assert got.status == 200 and got.body == data


async def test_jpeg_loses_its_exif_and_gps(api: Api) -> None:
    alice = await api.account()
    original = jpeg_with_gps((64, 32))
    assert SECRET.encode() in original and b"Exif" in original
    media = await uploaded(api, alice, original, "image/jpeg")
    assert media["content_type"] == "image/jpeg"
    # the orientation was applied to the pixels: a quarter turn, so 32 wide and 64 high
    assert (media["width"], media["height"]) == (32, 64)
    stored = (await download(api, alice, media["id"])).body
    assert media["sha256"] == hashlib.sha256(stored).hexdigest() and media["size"] == len(stored)
    assert SECRET.encode() not in stored and b"Exif" not in stored
    image = Image.open(io.BytesIO(stored))
    assert image.format == "JPEG" and image.size == (32, 64)
    assert dict(image.getexif()) == {} and image.getexif().get_ifd(0x8825) == {}


async def test_image_has_a_small_preview(api: Api) -> None:
    alice = await api.account()
    media = await uploaded(api, alice, png((1600, 1200)), "image/png")
    assert media["has_preview"] is True and (media["width"], media["height"]) == (1600, 1200)
    got = await download(api, alice, media["id"], preview=True)
    assert got.status == 200 and got.headers["Content-Type"] == "image/webp"
    preview = Image.open(io.BytesIO(got.body))
    assert preview.format == "WEBP" and max(preview.size) <= 320 and preview.size == (320, 240)
    assert int(got.headers["Content-Length"]) == len(got.body) < media["size"]


async def test_png_claimed_as_html_is_stored_as_png(api: Api) -> None:
    alice = await api.account()
    media = await uploaded(api, alice, png(), "text/html")
    assert media["content_type"] == "image/png"
    got = await download(api, alice, media["id"])
    assert got.headers["Content-Type"] == "image/png"
    assert "Content-Disposition" not in got.headers  # an image is shown inline


async def test_html_is_an_attachment_with_nosniff(api: Api) -> None:
    alice = await api.account()
    media = await uploaded(api, alice, HTML, "text/html")
    assert media["content_type"] == "application/octet-stream" and media["has_preview"] is False
    got = await download(api, alice, media["id"])
    assert got.status == 200 and got.body == HTML
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["Content-Disposition"].startswith("attachment")
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    csp = got.headers["Content-Security-Policy"]
    assert "sandbox" in csp and "default-src 'none'" in csp


@pytest.mark.parametrize(
    ("data", "hint", "expected", "inline"),
    [
        (SVG, "image/svg+xml", "application/octet-stream", False),  # an image that runs script
        (PDF, "application/pdf", "application/pdf", False),
        (PDF, "image/png", "application/pdf", False),
        (b"\x89PNG\r\n\x1a\n" + b"broken" * 50, "image/png", "application/octet-stream", False),
    ],
    ids=["svg", "pdf", "pdf-claimed-png", "png-that-does-not-decode"],
)
async def test_types_come_from_the_bytes(
    api: Api, data: bytes, hint: str, expected: str, inline: bool
) -> None:
    alice = await api.account()
    media = await uploaded(api, alice, data, hint)
    assert media["content_type"] == expected
    got = await download(api, alice, media["id"])
    assert got.headers["Content-Type"] == expected
    assert ("Content-Disposition" not in got.headers) is inline
    assert got.body == data  # what is not an image is stored as sent


async def test_empty_upload_is_refused(api: Api) -> None:
    alice = await api.account()
    assert_error(await upload(api, alice, b""), 422, "empty_media")


# --- limits ------------------------------------------------------------------------------------


async def test_upload_past_the_limit_is_413(node_api: Callable[..., Any]) -> None:
    _server, api = await node_api(media_max_bytes=2048)
    alice = await api.account()
    assert_error(await upload(api, alice, random_bytes(2049)), 413, "too_large")
    # without a Content-Length (chunked): counted as it comes
    r = await api.call("POST", "/api/v1/media", alice.token, data=chunked(random_bytes(5000), 1000))
    assert_error(r, 413, "too_large")
    exactly = random_bytes(2048)
    media = await uploaded(api, alice, exactly)
    assert (await download(api, alice, media["id"])).body == exactly


async def _raw_upload(port: int, token: str, declared: int, body_parts: list[bytes]) -> bytes:
    """Send an upload's head and `body_parts` over a raw socket, then wait for the answer's head
    (the server answers while the body is still incomplete)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /api/v1/media HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {declared}\r\n\r\n".encode()
        )
        for part in body_parts:
            writer.write(part)
            await writer.drain()
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    finally:
        writer.close()


async def test_a_stalled_upload_is_cut(node_api: Callable[..., Any]) -> None:
    server, api = await node_api(media_read_timeout=0.5)
    alice = await api.account()
    started = time.monotonic()
    head = await _raw_upload(server.port, alice.token, 1000, [b"x" * 10])
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"Connection: close" in head
    assert time.monotonic() - started < 5


async def test_a_trickling_upload_is_cut_at_the_total_timeout(
    node_api: Callable[..., Any],
) -> None:
    server, api = await node_api(media_read_timeout=5, media_upload_timeout=1.0)
    alice = await api.account()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    writer.write(
        b"POST /api/v1/media HTTP/1.1\r\nHost: localhost\r\n"
        + f"Authorization: Bearer {alice.token}\r\nContent-Length: 100000\r\n\r\n".encode()
    )
    answer = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    try:
        while not answer.done():  # one byte every 50 ms: never idle, never done
            writer.write(b"x")
            await writer.drain()
            await asyncio.wait([answer], timeout=0.05)
        head = answer.result()
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert 1.0 <= time.monotonic() - started < 5


# --- downloads: ranges and validators ----------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status", "start", "end"),
    [
        ("bytes=0-99", 206, 0, 100),
        ("bytes=1000-", 206, 1000, 5000),
        ("bytes=-10", 206, 4990, 5000),
        ("bytes=4990-9999", 206, 4990, 5000),
        ("bytes=600000-", 206, 600000, 700000),  # starts inside a later chunk
        ("bytes=524000-525000", 206, 524000, 525001),  # crosses a chunk boundary
        ("bytes=0-1,5-6", 200, 0, None),  # several ranges: the whole file
        ("items=0-9", 200, 0, None),  # another unit: ignored
    ],
    ids=repr,
)
async def test_range_requests(
    api: Api, header: str, status: int, start: int, end: int | None
) -> None:
    alice = await api.account()
    size = 700_000 if "600000" in header or "524000" in header else 5000
    data = random_bytes(size)
    media = await uploaded(api, alice, data)
    got = await download(api, alice, media["id"], headers={"Range": header})
    assert got.status == status, got
    want = data[start:end]
    assert got.body == want and int(got.headers["Content-Length"]) == len(want)
    assert got.headers["Accept-Ranges"] == "bytes"
    if status == 206:
        assert got.headers["Content-Range"] == f"bytes {start}-{start + len(want) - 1}/{size}"


async def test_unsatisfiable_range_is_416(api: Api) -> None:
    alice = await api.account()
    media = await uploaded(api, alice, random_bytes(100))
    got = await download(api, alice, media["id"], headers={"Range": "bytes=100-"})
    assert got.status == 416 and got.headers["Content-Range"] == "bytes */100"
    assert b"range_not_satisfiable" in got.body
    got = await download(api, alice, media["id"], headers={"Range": "bytes=-0"})
    assert got.status == 416


async def test_etag_and_conditional_requests(api: Api) -> None:
    alice = await api.account()
    data = random_bytes(3000)
    media = await uploaded(api, alice, data)
    first = await download(api, alice, media["id"])
    tag = first.headers["ETag"]
    assert tag == f'"{media["sha256"]}"'
    again = await download(api, alice, media["id"], headers={"If-None-Match": tag})
    assert again.status == 304 and again.body == b""
    # If-Range with another version's tag: the whole file, not the part
    stale = await download(
        api, alice, media["id"], headers={"Range": "bytes=0-9", "If-Range": '"other"'}
    )
    assert stale.status == 200 and stale.body == data
    fresh = await download(api, alice, media["id"], headers={"Range": "bytes=0-9", "If-Range": tag})
    assert fresh.status == 206 and fresh.body == data[:10]


# --- who may fetch -----------------------------------------------------------------------------


async def test_only_the_uploader_and_members_of_a_chat_where_it_is_attached(
    api: Api, trio: tuple[Account, Account, str]
) -> None:
    alice, bob, chat = trio
    carol = await api.account()
    data = png()
    media = await uploaded(api, alice, data, "image/png")
    for who in (bob, carol):  # not attached anywhere yet: only alice
        for preview in (False, True):
            assert (await download(api, who, media["id"], preview=preview)).status == 404
    r = await send_with(api, alice, chat, [media["id"]], "look")
    assert r.status == 201, r
    assert r.body["attachments"] == [media]
    for preview in (False, True):
        assert (await download(api, bob, media["id"], preview=preview)).status == 200
        got = await download(api, carol, media["id"], preview=preview)
        assert got.status == 404 and b"not_found" in got.body  # 404, never 403
    assert (await download(api, None, media["id"])).status == 401


async def test_unknown_and_malformed_ids_are_404(api: Api) -> None:
    alice = await api.account()
    for media_id in ("A" * 22, "nope", "x" * 200, "..%2F..%2Fetc"):
        got = await download(api, alice, media_id)
        assert got.status == 404, (media_id, got)


async def test_no_preview_is_404(api: Api) -> None:
    alice = await api.account()
    media = await uploaded(api, alice, PDF)
    assert (await download(api, alice, media["id"], preview=True)).status == 404


async def test_a_member_who_left_loses_access(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    group = await api.group(alice, [bob])
    media = await uploaded(api, alice, png(), "image/png")
    assert (await send_with(api, alice, group, [media["id"]])).status == 201
    assert (await download(api, bob, media["id"])).status == 200
    left = await api.call("DELETE", f"/api/v1/chats/{group}/members/{bob.id}", bob.token)
    assert left.status == 204, left
    assert (await download(api, bob, media["id"])).status == 404


# --- attachments on messages -------------------------------------------------------------------


async def test_message_with_attachments_only(api: Api, trio: tuple[Account, Account, str]) -> None:
    alice, bob, chat = trio
    first = await uploaded(api, alice, png(), "image/png")
    second = await uploaded(api, alice, PDF)
    r = await send_with(api, alice, chat, [second["id"], first["id"]])
    assert r.status == 201, r
    message = schemas.Message.model_validate(r.body)
    assert message.text == "" and [a.id for a in message.attachments] == [second["id"], first["id"]]
    history = await api.history(bob, chat)
    assert history[-1]["attachments"] == [second, first]


@pytest.mark.parametrize("how", ["unknown", "someone-elses", "malformed"])
async def test_attaching_media_that_is_not_yours_is_422(
    api: Api, storage: Storage, trio: tuple[Account, Account, str], how: str
) -> None:
    alice, bob, chat = trio
    if how == "unknown":
        media_id = "A" * 22
    elif how == "someone-elses":
        media_id = (await uploaded(api, bob, png(), "image/png"))["id"]
    else:
        media_id = "not an id"
    assert_error(await send_with(api, alice, chat, [media_id], "x"), 422, "unknown_media")
    assert await storage.pool.fetchval("SELECT count(*) FROM messages") == 0


async def test_attachment_rules(api: Api, trio: tuple[Account, Account, str]) -> None:
    alice, _, chat = trio
    media = await uploaded(api, alice, PDF)
    assert_error(await send_with(api, alice, chat, [], ""), 422, "validation_error")
    assert_error(await send_with(api, alice, chat, [media["id"]] * 2), 422, "validation_error")
    many = [(await uploaded(api, alice, PDF))["id"] for _ in range(11)]
    assert_error(await send_with(api, alice, chat, many), 422, "validation_error")
    assert (await send_with(api, alice, chat, many[:10])).status == 201


async def test_attachments_over_the_websocket(api: Api, trio: tuple[Account, Account, str]) -> None:
    alice, bob, chat = trio
    media = await uploaded(api, alice, jpeg_with_gps(), "image/jpeg")
    wa, wb = await api.ws(alice), await api.ws(bob)
    cmid = uuid.uuid4().hex
    frame = {"type": "send", "chat_id": chat, "client_msg_id": cmid, "text": ""}
    await wa.send({**frame, "attachments": [media["id"]]})
    sent = await wa.next("sent")
    assert sent["message"]["attachments"] == [media]
    received = (await wb.messages(1, chat))[0]
    assert received["attachments"] == [media] and received["text"] == ""
    # someone else's media: an error frame naming the send, and nothing stored
    other = await uploaded(api, bob, PDF)
    await wa.send({**frame, "client_msg_id": "c2", "attachments": [other["id"]]})
    error = await wa.next("error")
    assert (error["code"], error["ref"]) == ("unknown_media", "c2")
    await wa.send({**frame, "client_msg_id": "c3"})  # no text, no attachments
    error = await wa.next("error")
    assert (error["code"], error["ref"]) == ("invalid_frame", "c3")
    assert len(await api.history(alice, chat)) == 1


# --- two nodes ---------------------------------------------------------------------------------


async def test_upload_on_one_node_download_on_another(node_api: Callable[..., Any]) -> None:
    _a, api_a = await node_api()
    _b, api_b = await node_api()
    alice, bob = await api_a.account(), await api_a.account()
    chat = await api_a.direct(alice, bob)
    data = random_bytes(1_500_000)
    media = await uploaded(api_a, alice, data)
    wb = await api_b.ws(bob)
    assert (await send_with(api_a, alice, chat, [media["id"]], "from A")).status == 201
    message = (await wb.messages(1, chat))[0]
    assert message["attachments"] == [media]
    got = await download(api_b, bob, media["id"])
    assert got.status == 200 and got.body == data
    part = await download(api_b, bob, media["id"], headers={"Range": "bytes=1000000-"})
    assert part.status == 206 and part.body == data[1_000_000:]
    # bob's answer, sent on B to the chat whose actor runs on A: the attachment travels inside
    # the forwarded send
    reply = await uploaded(api_b, bob, png(), "image/png")
    r = await send_with(api_b, bob, chat, [reply["id"]], "from B")
    assert r.status == 201 and r.body["attachments"] == [reply], r
    assert (await api_a.history(alice, chat))[-1]["attachments"] == [reply]
    assert (await download(api_a, alice, reply["id"], preview=True)).status == 200


# --- cleanup -----------------------------------------------------------------------------------


async def test_unattached_uploads_are_cleaned_up(
    node: TestServer, api: Api, storage: Storage, trio: tuple[Account, Account, str]
) -> None:
    alice, bob, chat = trio
    runtime = node.app[RUNTIME]
    assert "media-cleanup" in dict(runtime.loops())
    kept = await uploaded(api, alice, png(), "image/png")
    dropped = await uploaded(api, alice, random_bytes(600_000))
    assert (await send_with(api, alice, chat, [kept["id"]])).status == 201
    assert await runtime.media_cleanup.sweep() == 0  # the configured age has not passed
    assert await runtime.media_cleanup.sweep(age=0) == 1
    assert (await download(api, alice, dropped["id"])).status == 404
    chunks = "SELECT count(*) FROM media_chunks WHERE media_id = $1"
    assert await storage.pool.fetchval(chunks, dropped["id"]) == 0
    assert await storage.pool.fetchval(chunks, kept["id"]) == 2  # original and preview
    assert (await download(api, bob, kept["id"])).status == 200
    attached = "SELECT attached FROM media WHERE id = $1"
    assert await storage.pool.fetchval(attached, kept["id"]) is True
    assert await runtime.media_cleanup.sweep(age=0) == 0


# --- a served node (aiohttp as `serve` runs it: handlers are not cancelled on disconnect) --------


@pytest.mark.process
async def test_clients_that_go_away_mid_stream_leave_no_error(
    tmp_path: Path, database_url: str, redis_url: str
) -> None:
    node = NodeProcess(
        {
            "MESSENGER_HOST": "127.0.0.1",
            "MESSENGER_PORT": str(free_port()),
            "MESSENGER_DATA_DIR": str(tmp_path / "data"),
            "MESSENGER_DATABASE_URL": database_url,
            "MESSENGER_REDIS_URL": redis_url,
            "MESSENGER_JWT_SECRET": "media-process-secret-0123456789",
            "MESSENGER_BCRYPT_ROUNDS": "4",
            "MESSENGER_LOG_FORMAT": "text",
        },
        tmp_path / "node.log",
    ).start()
    try:
        await node.wait_healthy()
        async with aiohttp.ClientSession() as http:
            api = Api(http, node.url)
            alice = await api.account()
            media = await uploaded(api, alice, random_bytes(3_000_000))
            # a download abandoned after its first bytes
            headers = {"Authorization": f"Bearer {alice.token}"}
            async with http.get(f"{node.url}/api/v1/media/{media['id']}", headers=headers) as r:
                assert r.status == 200
                await r.content.readexactly(65536)
            # an upload abandoned half way
            _reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
            writer.write(
                b"POST /api/v1/media HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                + f"Authorization: Bearer {alice.token}\r\n\r\n".encode()
                + b"x" * 5000
            )
            await writer.drain()
            writer.close()
            await writer.wait_closed()
            # the node serves on, and the next upload and download work
            again = await uploaded(api, alice, random_bytes(1000))
            assert (await download(api, alice, again["id"])).status == 200
        assert await node.terminate() == 0
        log = node.log_text()
        assert "Traceback" not in log and "http.unhandled" not in log, node.log_tail()
    finally:
        node.cleanup()
