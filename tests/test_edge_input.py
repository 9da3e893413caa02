"""Hostile input at the edge, over a real node: every input is answered in the contract's shape.

- text PostgreSQL cannot store (a NUL character) is 422 wherever text enters, REST and WebSocket;
- a token whose subject is not a live user is 401 `invalid_token` on every authenticated route
  and on the WebSocket upgrade;
- `?token=` authenticates the WebSocket upgrade only;
- aiohttp's own protocol errors come in the contract's JSON error shape without echoing input;
- no token, nor the start of one, appears in any log line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer

from node.config import Settings
from node.logs import JsonFormatter
from node.services.access_tokens import signing_key
from node.storage import Storage
from tests.support import NO_SUCH_ID, PASSWORD, Account, Api, Response, assert_error
from tests.test_http_errors import AUTHENTICATED, route_id

NUL = "a\x00b"


# --- NUL characters ------------------------------------------------------------------------------


@pytest.fixture
async def me(api: Api) -> Account:
    return await api.account()


async def test_nul_in_a_login_username_is_422(api: Api) -> None:
    r = await api.call("POST", "/api/v1/auth/login", json={"username": NUL, "password": PASSWORD})
    assert_error(r, 422, "validation_error")


async def test_nul_in_a_login_password_is_422(api: Api, me: Account) -> None:
    r = await api.call(
        "POST", "/api/v1/auth/login", json={"username": me.username, "password": "pass\x00word-1"}
    )
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize("field", ["username", "password"])
async def test_nul_in_registration_is_422(api: Api, field: str) -> None:
    body = {"username": f"u{uuid.uuid4().hex[:8]}", "password": PASSWORD}
    body[field] = body[field] + "\x00x"
    assert_error(
        await api.call("POST", "/api/v1/auth/register", json=body), 422, "validation_error"
    )


async def test_nul_in_a_refresh_token_is_422(api: Api) -> None:
    r = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": NUL})
    assert_error(r, 422, "validation_error")


async def test_nul_in_a_group_title_is_422_and_creates_nothing(api: Api, me: Account) -> None:
    r = await api.call("POST", "/api/v1/chats", me.token, json={"kind": "group", "title": NUL})
    assert_error(r, 422, "validation_error")
    listed = await api.call("GET", "/api/v1/chats", me.token)
    assert listed.status == 200 and listed.body["items"] == []


async def test_nul_in_a_user_search_is_422(api: Api, me: Account) -> None:
    r = await api.call("GET", "/api/v1/users", me.token, params={"q": NUL})
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize("field", ["text", "client_msg_id"])
async def test_nul_in_a_rest_message_is_422(api: Api, me: Account, field: str) -> None:
    other = await api.account()
    chat = await api.direct(me, other)
    body = {"client_msg_id": uuid.uuid4().hex, "text": "hello"}
    body[field] = NUL
    r = await api.call("POST", f"/api/v1/chats/{chat}/messages", me.token, json=body)
    assert_error(r, 422, "validation_error")
    assert await api.history(me, chat) == []


@pytest.mark.parametrize("field", ["text", "client_msg_id"])
async def test_nul_in_a_websocket_send_is_an_error_frame(api: Api, me: Account, field: str) -> None:
    other = await api.account()
    chat = await api.direct(me, other)
    ws = await api.ws(me)
    frame = {"type": "send", "chat_id": chat, "client_msg_id": uuid.uuid4().hex, "text": "hi"}
    frame[field] = NUL
    await ws.send(frame)
    error = await ws.next("error")
    assert error["code"] == "invalid_frame", error
    # the socket is still good, and nothing was stored
    cmid = await ws.send_message(chat, "after the refusal")
    sent = await ws.next("sent", where=lambda f: f["client_msg_id"] == cmid)
    assert sent["message"]["seq"] == 1
    assert [m["text"] for m in await api.history(me, chat)] == ["after the refusal"]


@pytest.mark.parametrize("device", ["%00", "a%00b", "phone%0A"])
async def test_unstorable_device_id_is_422_before_the_upgrade(
    api: Api, me: Account, device: str
) -> None:
    r = await api.call(
        "GET",
        f"/api/v1/ws?device_id={device}",
        me.token,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert_error(r, 422, "validation_error")


# --- tokens of users that do not exist -----------------------------------------------------------


def token_for(settings: Settings, sub: str) -> str:
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, signing_key(settings.jwt_secret or ""), algorithm="HS256")


async def deleted_user_token(api: Api, storage: Storage) -> str:
    gone = await api.account()
    async with storage.pool.acquire() as conn:
        await conn.execute("DELETE FROM users WHERE id = $1", int(gone.id))
    return gone.token


@pytest.mark.parametrize("route", AUTHENTICATED, ids=route_id)
@pytest.mark.parametrize("subject", ["deleted", "never_existed", "past_int64"])
async def test_token_of_no_live_user_is_401_invalid_token_everywhere(
    api: Api, settings: Settings, storage: Storage, route: tuple[str, str, Any], subject: str
) -> None:
    if subject == "deleted":
        token = await deleted_user_token(api, storage)
    else:
        token = token_for(settings, NO_SUCH_ID if subject == "never_existed" else str(2**63))
    method, path, body = route
    assert_error(await api.call(method, path, token, json=body), 401, "invalid_token")


@pytest.mark.parametrize("subject", ["deleted", "past_int64"])
async def test_token_of_no_live_user_cannot_open_a_websocket(
    api: Api, settings: Settings, storage: Storage, subject: str
) -> None:
    if subject == "deleted":
        token = await deleted_user_token(api, storage)
    else:
        token = token_for(settings, str(2**63))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.http.ws_connect(
            f"{api.base}/api/v1/ws?device_id=d1", headers={"Authorization": f"Bearer {token}"}
        )
    assert refused.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.http.ws_connect(f"{api.base}/api/v1/ws?device_id=d1&token={token}")
    assert refused.value.status == 401


# --- ?token= is for the WebSocket only -----------------------------------------------------------


@pytest.mark.parametrize("route", AUTHENTICATED, ids=route_id)
async def test_token_in_the_query_does_not_authenticate_rest(
    api: Api, me: Account, route: tuple[str, str, Any]
) -> None:
    method, path, body = route
    r = await api.call(method, path, params={"token": me.token}, json=body)
    assert_error(r, 401, "unauthorized")


# --- aiohttp's own refusals ----------------------------------------------------------------------


async def exchange(node: TestServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes as a request; (status, headers, body) of the answer."""
    assert node.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


SECRET_MARK = "SeCrEtToKeN"
MALFORMED = {
    "header_too_long": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: "
    + SECRET_MARK.encode() * 1000
    + b"\r\n\r\n",
    "url_too_long": b"GET /api/v1/ws?token=" + SECRET_MARK.encode() * 1000 + b" HTTP/1.1\r\n\r\n",
    "bad_header": b"GET /api/v1/ws?token="
    + SECRET_MARK.encode()
    + b" HTTP/1.1\r\nBad Name: v\r\n\r\n",
    "bad_char_in_url": b"GET /api/v1/ws?token=" + SECRET_MARK.encode() + b"\x01 HTTP/1.1\r\n\r\n",
    "not_http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
    + SECRET_MARK.encode()
    + b"\r\n\r\n",
}


@pytest.mark.parametrize("kind", list(MALFORMED))
async def test_protocol_errors_have_the_contract_shape_and_echo_nothing(
    node: TestServer, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await exchange(node, MALFORMED[kind])
    assert status == 400
    assert headers["content-type"].startswith("application/json")
    assert_error(Response(status, json.loads(body)), 400, "bad_request")
    assert SECRET_MARK.encode() not in body
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors == [], errors
    assert_no_secret_logged(caplog, SECRET_MARK)


def assert_no_secret_logged(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No log record, formatted with everything it carries (message, extra fields, traceback),
    holds any of `secrets`, nor their first 12 characters."""
    formatter = JsonFormatter("test")
    for record in caplog.records:
        line = formatter.format(record)
        for secret in secrets:
            assert secret[:12] not in line, line


async def test_no_token_appears_in_any_log_line(
    api: Api, node: TestServer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    me = await api.account()
    with caplog.at_level(logging.DEBUG):
        # the WebSocket upgrade with ?token= (accepted), then one refused with a bad token
        ws = await api.http.ws_connect(f"{api.base}/api/v1/ws?device_id=d1&token={me.token}")
        await ws.receive_json(timeout=10)
        await ws.close()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await api.http.ws_connect(f"{api.base}/api/v1/ws?token={me.token}x")
        # REST with ?token= (refused), and one with the header (accepted)
        await api.call("GET", "/api/v1/users/me", params={"token": me.token})
        assert (await api.call("GET", "/api/v1/users/me", me.token)).status == 200
        # protocol errors around a URL holding the token
        for raw in (
            f"GET /api/v1/ws?token={me.token}\x01 HTTP/1.1\r\n\r\n".encode(),
            f"GET /api/v1/ws?token={me.token}{'x' * 9000} HTTP/1.1\r\n\r\n".encode(),
            f"GET /api/v1/ws?token={me.token} HTTP/1.1\r\nBad Name: v\r\n\r\n".encode(),
        ):
            await exchange(node, raw)
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert_no_secret_logged(caplog, me.token, me.refresh_token)
