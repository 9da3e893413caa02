"""The WebSocket edge: the handshake (auth and device id before the upgrade), the `ready` frame,
and every client frame type, valid and invalid.

A refused frame is answered with an `error` frame (with `ref` = its client_msg_id where it had
one) and the connection stays open: every refusal here is followed by a ping that must get its
pong and a send that must go through on the same socket.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from node.config import Settings
from node.services.access_tokens import AccessTokens
from node.storage import Storage
from tests.support import Account, Api, WsClient

ANY = object()  # "the error frame may or may not carry a ref"


# --- helpers -------------------------------------------------------------------------------------


async def pair(api: Api) -> tuple[Account, Account, str]:
    a, b = await api.account(), await api.account()
    return a, b, await api.direct(a, b)


async def handshake(
    api: Api, query: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    """A raw upgrade request: (status, JSON body or text, response headers)."""
    key = base64.b64encode(os.urandom(16)).decode()
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": key,
    }
    async with api.http.get(
        f"{api.base}/api/v1/ws{query}", headers={**upgrade, **(headers or {})}
    ) as r:
        text = await r.text()
        try:
            body: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            body = text
        return r.status, body, dict(r.headers)


async def refused_upgrade(api: Api, query: str, headers: dict[str, str] | None = None) -> int:
    """Try a real WebSocket connect; the HTTP status it was refused with."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        ws = await api.http.ws_connect(f"{api.base}/api/v1/ws{query}", headers=headers or {})
        await ws.close()
    return info.value.status


async def still_open(ws: WsClient, chat_id: str) -> None:
    """Prove the connection survived: a ping gets its pong, a send gets `sent` and `message`."""
    pongs = len(ws.of_kind("pong"))
    await ws.send({"type": "ping"})
    await ws.next("pong", where=lambda f: len(ws.of_kind("pong")) > pongs)
    cmid = await ws.send_message(chat_id, "still here")
    sent = await ws.next("sent", where=lambda f: f["client_msg_id"] == cmid)
    msg = await ws.next("message", where=lambda f: f["message"]["client_msg_id"] == cmid)
    assert msg["message"] == sent["message"]
    assert not ws.closed.is_set()


def error_shape(frame: dict[str, Any]) -> None:
    assert frame["type"] == "error"
    assert set(frame) <= {"type", "code", "message", "ref"}, frame
    assert isinstance(frame["code"], str) and frame["code"]
    assert isinstance(frame["message"], str) and frame["message"]
    assert "Traceback" not in frame["message"]


# --- handshake ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth",
    ["missing", "garbage", "wrong_secret", "expired", "basic_scheme", "empty_bearer"],
)
async def test_bad_token_is_refused_with_401_before_the_upgrade(
    api: Api, settings: Settings, auth: str
) -> None:
    user = await api.account()
    secret = settings.jwt_secret or ""
    headers = {
        "missing": {},
        "garbage": {"Authorization": "Bearer not.a.token"},
        "wrong_secret": {
            "Authorization": "Bearer "
            + AccessTokens("another-secret-0123456789", 60).issue(int(user.id))
        },
        "expired": {
            "Authorization": "Bearer "
            + AccessTokens(secret, 60, clock=lambda: time.time() - 3600).issue(int(user.id))
        },
        "basic_scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
        "empty_bearer": {"Authorization": "Bearer "},
    }[auth]
    status, body, response_headers = await handshake(api, "?device_id=d1", headers)
    assert status == 401
    assert body["error"]["code"] in {"unauthorized", "invalid_token", "token_expired"}
    assert "upgrade" not in {k.lower() for k in response_headers}
    if auth == "expired":
        assert body["error"]["code"] == "token_expired"
    assert await refused_upgrade(api, "?device_id=d1", headers) == 401


async def test_bad_token_in_query_is_refused_with_401(api: Api) -> None:
    assert await refused_upgrade(api, "?device_id=d1&token=not.a.token") == 401


async def test_token_in_query_works(api: Api, settings: Settings) -> None:
    a, _b, _chat = await pair(api)
    ws = await api.http.ws_connect(f"{api.base}/api/v1/ws?device_id=browser&token={a.token}")
    try:
        ready = await ws.receive_json(timeout=10)
        assert ready == {
            "type": "ready",
            "user_id": a.id,
            "device_id": "browser",
            "node_id": settings.node_id,
        }
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=10) == {"type": "pong"}
    finally:
        await ws.close()


@pytest.mark.parametrize("device", ["bad id", "x" * 65, "", "caf%C3%A9", "a/b", "semi%3Bcolon"])
async def test_bad_device_id_is_refused_with_422_before_the_upgrade(api: Api, device: str) -> None:
    user = await api.account()
    auth = {"Authorization": f"Bearer {user.token}"}
    status, body, response_headers = await handshake(api, f"?device_id={device}", auth)
    assert status == 422, body
    assert body["error"]["code"] == "validation_error"
    assert "upgrade" not in {k.lower() for k in response_headers}
    assert await refused_upgrade(api, f"?device_id={device}", auth) == 422


async def test_ready_is_the_first_frame(api: Api, settings: Settings) -> None:
    a, b, chat = await pair(api)
    await api.send(b, chat, "waiting in the backlog")
    ws = await api.ws(a, "phone-1")
    assert ws.seen[0] == {
        "type": "ready",
        "user_id": a.id,
        "device_id": "phone-1",
        "node_id": settings.node_id,
    }
    await ws.messages(1, chat)
    assert ws.seen[0]["type"] == "ready" and ws.seen[1]["type"] == "message"


async def test_device_id_defaults_to_default(api: Api) -> None:
    a = await api.account()
    ws = await api.http.ws_connect(
        f"{api.base}/api/v1/ws", headers={"Authorization": f"Bearer {a.token}"}
    )
    try:
        ready = await ws.receive_json(timeout=10)
        assert ready["type"] == "ready" and ready["device_id"] == "default"
    finally:
        await ws.close()


async def test_no_middleware_frame_stays_under_an_open_socket(api: Api) -> None:
    """The error middleware hands the WebSocket handler on unwrapped: none of its frames stays
    suspended under every open socket (an idle socket's memory, issue 11)."""
    a = await api.account()
    await api.ws(a, "idle-1")
    chains: list[list[str]] = []
    for task in asyncio.all_tasks():
        files: list[str] = []
        coro: Any = task.get_coro()
        while coro is not None and hasattr(coro, "cr_code"):
            files.append(f"{coro.cr_code.co_filename}:{coro.cr_code.co_qualname}")
            coro = coro.cr_await
        if any(f.endswith(":websocket_handler") for f in files):
            chains.append(files)
    assert len(chains) == 1, chains  # the socket's handler runs in this process
    assert not [f for f in chains[0] if "node/http/middleware.py" in f], chains[0]


# --- send --------------------------------------------------------------------------------------


async def test_send_gives_sent_and_message_to_sender_and_message_to_peer(api: Api) -> None:
    a, b, chat = await pair(api)
    wa, wb = await api.ws(a), await api.ws(b)
    cmid = await wa.send_message(chat, "hello")
    sent = await wa.next("sent")
    assert sent["client_msg_id"] == cmid
    m = sent["message"]
    assert set(m) == {
        "id",
        "chat_id",
        "seq",
        "sender_id",
        "client_msg_id",
        "text",
        "attachments",
        "created_at",
    }
    assert (m["chat_id"], m["seq"], m["sender_id"], m["client_msg_id"], m["text"]) == (
        chat,
        1,
        a.id,
        cmid,
        "hello",
    )
    assert m["attachments"] == []
    assert isinstance(m["id"], str) and m["created_at"].endswith("Z")
    assert await wa.messages(1, chat) == [m]
    assert await wb.messages(1, chat) == [m]
    assert wb.of_kind("sent") == []


async def test_repeated_client_msg_id_returns_the_original_and_stores_nothing(api: Api) -> None:
    a, b, chat = await pair(api)
    wa, wb = await api.ws(a), await api.ws(b)
    cmid = await wa.send_message(chat, "first")
    original = (await wa.next("sent"))["message"]
    await wa.send_message(chat, "second text, same id", cmid=cmid)
    again = await wa.next("sent")
    assert again == {"type": "sent", "client_msg_id": cmid, "message": original}
    # the next new message takes seq 2: the repeat stored nothing
    other = await wa.send_message(chat, "next")
    assert (await wa.next("sent"))["message"]["seq"] == 2
    for ws in (wa, wb):
        got = await ws.messages(2, chat)
        assert [(x["seq"], x["client_msg_id"], x["text"]) for x in got] == [
            (1, cmid, "first"),
            (2, other, "next"),
        ]
    await wb.quiet("message", 0.3)
    assert [x["seq"] for x in await api.history(a, chat)] == [1, 2]


async def test_same_client_msg_id_twice_in_one_burst_stores_one_message(api: Api) -> None:
    a, b, chat = await pair(api)
    wa, wb = await api.ws(a), await api.ws(b)
    cmid = uuid.uuid4().hex
    await wa.send_message(chat, "one", cmid=cmid)
    await wa.send_message(chat, "two", cmid=cmid)
    first, second = await wa.next("sent"), await wa.next("sent")
    assert first == second and first["message"]["text"] == "one"
    assert [x["seq"] for x in await wb.messages(1, chat)] == [1]
    await wb.quiet("message", 0.3)
    assert [x["text"] for x in await api.history(a, chat)] == ["one"]


async def test_repeat_of_a_rest_send_over_websocket_returns_the_original(api: Api) -> None:
    a, _b, chat = await pair(api)
    r = await api.send(a, chat, "over rest", cmid="rest-1")
    assert r.status == 201
    wa = await api.ws(a)
    await wa.messages(1, chat)
    await wa.send_message(chat, "over ws", cmid="rest-1")
    sent = await wa.next("sent")
    assert sent["message"] == r.body


async def test_send_to_a_chat_you_are_not_in_is_not_member(api: Api) -> None:
    a, _b, chat = await pair(api)
    c = await api.account()
    wc = await api.ws(c)
    cmid = await wc.send_message(chat, "let me in")
    err = await wc.next("error")
    error_shape(err)
    assert (err["code"], err["ref"]) == ("not_member", cmid)
    assert await api.history(a, chat) == []
    own = await api.direct(c, a)
    await still_open(wc, own)


async def test_send_to_a_chat_that_does_not_exist_is_not_member(api: Api) -> None:
    a, _b, chat = await pair(api)
    wa = await api.ws(a)
    cmid = await wa.send_message("987654321", "anyone?")
    err = await wa.next("error")
    error_shape(err)
    assert (err["code"], err["ref"]) == ("not_member", cmid)
    await still_open(wa, chat)


async def test_client_msg_id_reused_in_another_chat_is_idempotency_conflict(api: Api) -> None:
    a, _b, chat = await pair(api)
    c = await api.account()
    other = await api.direct(a, c)
    wa, wc = await api.ws(a), await api.ws(c)
    cmid = await wa.send_message(chat, "first use")
    assert (await wa.next("sent"))["message"]["chat_id"] == chat
    await wa.send_message(other, "second use", cmid=cmid)
    err = await wa.next("error")
    error_shape(err)
    assert (err["code"], err["ref"]) == ("idempotency_conflict", cmid)
    assert await api.history(c, other) == []
    await wc.quiet("message", 0.3)
    await still_open(wa, other)


async def test_unknown_attachment_is_refused_with_ref(api: Api) -> None:
    a, _b, chat = await pair(api)
    wa = await api.ws(a)
    cmid = uuid.uuid4().hex
    frame = {"type": "send", "chat_id": chat, "client_msg_id": cmid, "text": "see"}
    await wa.send({**frame, "attachments": ["42"]})
    err = await wa.next("error")
    error_shape(err)
    assert err["ref"] == cmid and err["code"] != "internal_error"
    await still_open(wa, chat)
    assert [m["text"] for m in await api.history(a, chat)] == ["still here"]


async def test_rate_limited_send_is_an_error_frame_and_keeps_the_connection(
    node_api: Callable[..., Any],
) -> None:
    _server, api = await node_api(rate_burst=3, rate_per_second=0.001)
    a, _b, chat = await pair(api)
    wa = await api.ws(a)
    cmids = [await wa.send_message(chat, f"m{i}") for i in range(4)]
    err = await wa.next("error")
    error_shape(err)
    assert (err["code"], err["ref"]) == ("rate_limited", cmids[3])
    sent = [await wa.next("sent") for _ in range(3)]
    assert sorted(s["client_msg_id"] for s in sent) == sorted(cmids[:3])
    await wa.send({"type": "ping"})
    await wa.next("pong")
    assert not wa.closed.is_set()


# --- invalid frames ------------------------------------------------------------------------------


def _send(chat: str, **fields: Any) -> dict[str, Any]:
    return {"type": "send", "chat_id": chat, "client_msg_id": "cm-1", "text": "hi", **fields}


def _without(frame: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in frame.items() if k != key}


# (case id, frame builder (chat id -> text or bytes), expected code, expected ref)
INVALID: list[tuple[str, Callable[[str], str | bytes], str, object]] = [
    ("not_json", lambda c: "{not json", "invalid_frame", None),
    ("plain_text", lambda c: "hello", "invalid_frame", None),
    ("empty_text", lambda c: "", "invalid_frame", None),
    ("json_array", lambda c: "[1, 2]", "invalid_frame", None),
    ("json_string", lambda c: '"ping"', "invalid_frame", None),
    ("json_number", lambda c: "42", "invalid_frame", None),
    ("json_null", lambda c: "null", "invalid_frame", None),
    ("no_type", lambda c: orjson.dumps({"chat_id": c}).decode(), "invalid_frame", None),
    ("unknown_type", lambda c: '{"type": "subscribe", "chat_id": "1"}', "invalid_frame", None),
    ("type_not_string", lambda c: '{"type": 5}', "invalid_frame", None),
    (
        "send_without_text",
        lambda c: orjson.dumps(_without(_send(c), "text")).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_without_chat_id",
        lambda c: orjson.dumps(_without(_send(c), "chat_id")).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_without_client_msg_id",
        lambda c: orjson.dumps(_without(_send(c), "client_msg_id")).decode(),
        "invalid_frame",
        None,
    ),
    (
        "send_extra_field",
        lambda c: orjson.dumps(_send(c, priority="high")).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_chat_id_bool",
        lambda c: orjson.dumps(_send(c, chat_id=True)).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_chat_id_not_digits",
        lambda c: orjson.dumps(_send(c, chat_id="abc")).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_chat_id_zero",
        lambda c: orjson.dumps(_send(c, chat_id="0")).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_chat_id_list",
        lambda c: orjson.dumps(_send(c, chat_id=[c])).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_text_number",
        lambda c: orjson.dumps(_send(c, text=123)).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_text_empty",
        lambda c: orjson.dumps(_send(c, text="")).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_text_too_long",
        lambda c: orjson.dumps(_send(c, text="x" * 4001)).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "send_client_msg_id_too_long",
        lambda c: orjson.dumps(_send(c, client_msg_id="k" * 65)).decode(),
        "invalid_frame",
        ANY,
    ),
    (
        "send_client_msg_id_number",
        lambda c: orjson.dumps(_send(c, client_msg_id=7)).decode(),
        "invalid_frame",
        None,
    ),
    (
        "send_attachments_not_list",
        lambda c: orjson.dumps(_send(c, attachments="abc")).decode(),
        "invalid_frame",
        "cm-1",
    ),
    (
        "ack_without_seq",
        lambda c: orjson.dumps({"type": "ack", "chat_id": c}).decode(),
        "invalid_frame",
        None,
    ),
    (
        "ack_negative_seq",
        lambda c: orjson.dumps({"type": "ack", "chat_id": c, "seq": -1}).decode(),
        "invalid_frame",
        None,
    ),
    (
        "ack_seq_text",
        lambda c: orjson.dumps({"type": "ack", "chat_id": c, "seq": "one"}).decode(),
        "invalid_frame",
        None,
    ),
    (
        "ack_seq_float",
        lambda c: orjson.dumps({"type": "ack", "chat_id": c, "seq": 1.5}).decode(),
        "invalid_frame",
        None,
    ),
    ("ack_without_chat_id", lambda c: '{"type": "ack", "seq": 1}', "invalid_frame", None),
    ("typing_without_chat_id", lambda c: '{"type": "typing"}', "invalid_frame", None),
    (
        "typing_extra_field",
        lambda c: orjson.dumps({"type": "typing", "chat_id": c, "until": 5}).decode(),
        "invalid_frame",
        None,
    ),
    (
        "read_without_seq",
        lambda c: orjson.dumps({"type": "read", "chat_id": c}).decode(),
        "invalid_frame",
        None,
    ),
    (
        "read_seq_text",
        lambda c: orjson.dumps({"type": "read", "chat_id": c, "seq": "x"}).decode(),
        "invalid_frame",
        None,
    ),
    ("ping_extra_field", lambda c: '{"type": "ping", "x": 1}', "invalid_frame", None),
    ("binary_frame", lambda c: b'{"type": "ping"}', "invalid_frame", None),
    ("binary_garbage", lambda c: b"\x00\xff\x10", "invalid_frame", None),
    (
        "send_over_max_frame_bytes",
        lambda c: orjson.dumps(_send(c, text="y" * 100_000)).decode(),
        "too_large",
        "cm-1",
    ),
    (
        "ping_over_max_frame_bytes",
        lambda c: orjson.dumps({"type": "ping", "pad": "z" * 100_000}).decode(),
        "too_large",
        None,
    ),
    ("non_json_over_max_frame_bytes", lambda c: "q" * 100_000, "too_large", None),
]


@pytest.mark.parametrize(
    ("build", "code", "ref"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID]
)
async def test_invalid_frame_is_an_error_frame_and_the_connection_stays_open(
    api: Api, build: Callable[[str], str | bytes], code: str, ref: object
) -> None:
    a, b, chat = await pair(api)
    wa, wb = await api.ws(a), await api.ws(b)
    data = build(chat)
    if isinstance(data, bytes):
        await wa.ws.send_bytes(data)
    else:
        await wa.ws.send_str(data)
    await wa.send({"type": "ping"})
    err = await wa.next("error")
    await wa.next("pong")
    error_shape(err)
    assert err["code"] == code, err
    if ref is None:
        assert "ref" not in err, err
    elif ref is not ANY:
        assert err.get("ref") == ref, err
    kinds = [f["type"] for f in wa.seen]
    assert kinds.index("error") < kinds.index("pong"), kinds  # answered in order
    await still_open(wa, chat)
    assert wa.of_kind("error") == [err]  # one error for the one bad frame, none for the rest
    # nothing of the refused frame was stored or delivered
    assert [m["text"] for m in await api.history(a, chat)] == ["still here"]
    assert [m["text"] for m in await wb.messages(1, chat)] == ["still here"]


async def test_many_refused_frames_in_a_row_keep_one_connection(api: Api) -> None:
    a, _b, chat = await pair(api)
    wa = await api.ws(a)
    built = [case[1](chat) for case in INVALID]
    for data in built:
        if isinstance(data, bytes):
            await wa.ws.send_bytes(data)
        else:
            await wa.ws.send_str(data)
    for case in INVALID:
        err = await wa.next("error")
        assert err["code"] == case[2], (case[0], err)
    await still_open(wa, chat)


# --- ack -------------------------------------------------------------------------------------


async def test_ack_above_last_seq_is_refused_and_not_recorded(api: Api, storage: Storage) -> None:
    a, b, chat = await pair(api)
    await api.send(b, chat, "one")
    wa = await api.ws(a)
    await wa.messages(1, chat)
    await wa.ack(chat, 5)
    err = await wa.next("error")
    error_shape(err)
    assert err["code"] not in {"internal_error", "not_member"} and "ref" not in err
    await wa.ack(chat, 1)  # a good ack afterwards is taken
    await still_open(wa, chat)
    assert await wait_cursor(storage, a.id, chat, lambda v: v is not None) == 1
    assert wa.of_kind("error") == [err]


async def test_ack_of_a_chat_you_are_not_in_is_not_member(api: Api, storage: Storage) -> None:
    a, _b, chat = await pair(api)
    c = await api.account()
    await api.send(a, chat, "private")
    wc = await api.ws(c)
    await wc.ack(chat, 1)
    err = await wc.next("error")
    error_shape(err)
    assert err["code"] == "not_member" and "ref" not in err
    await wc.ack("987654321", 1)
    err2 = await wc.next("error", where=lambda f: f is not err)
    assert err2["code"] == "not_member"
    own = await api.direct(c, a)
    await still_open(wc, own)
    async with storage.pool.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM device_cursors WHERE user_id = $1 AND chat_id = $2",
            int(c.id),
            int(chat),
        )
    assert count == 0


async def test_ack_is_silent_on_success(api: Api) -> None:
    a, b, chat = await pair(api)
    await api.send(b, chat, "one")
    wa = await api.ws(a)
    await wa.messages(1, chat)
    await wa.ack(chat, 1)
    await wa.ack(chat, 1)  # repeating an ack is harmless
    await wa.ack(chat, 0)  # and so is an older one
    await wa.send({"type": "ping"})
    await wa.next("pong")
    assert wa.of_kind("error") == []


async def test_common_frames_get_the_same_answers_on_the_fast_path_and_the_models(
    api: Api,
) -> None:
    """`ack`/`read` in their plain form take the fast path (`parse_common`); the same frames with
    a seq the models accept in lax form only (2.0) go through the models. Both give the same
    refusals (not_member, invalid_ack, a read above the last seq) and take the same good acks.
    Each path on fresh devices (read marks are throttled per connection)."""
    a, b, chat = await pair(api)
    c = await api.account()
    await api.send(b, chat, "one")
    answers: dict[str, list[str]] = {}
    for path, seq, good in (("fast", "2", "1"), ("models", "2.0", "1.0")):
        wa, wc = await api.ws(a, f"a-{path}"), await api.ws(c, f"c-{path}")
        await wa.messages(1, chat)
        got = answers.setdefault(path, [])
        for who, raw in (
            (wc, f'{{"type":"ack","chat_id":"{chat}","seq":{seq}}}'),  # not a member
            (wc, f'{{"type":"read","chat_id":"{chat}","seq":{seq}}}'),  # not a member
            (wa, f'{{"type":"ack","chat_id":"{chat}","seq":{seq}}}'),  # above the last seq
            (wa, f'{{"type":"read","chat_id":"{chat}","seq":{seq}}}'),  # above the last seq
            (wa, f'{{"type":"ack","chat_id":"{chat}","seq":{good}}}'),  # taken (silent)
        ):
            before = len(who.of_kind("error"))
            await who.ws.send_str(raw)
            await who.send({"type": "ping"})
            await who.next("pong")
            errs = who.of_kind("error")[before:]
            assert len(errs) <= 1, errs
            got.append(errs[0]["code"] if errs else "none")
            assert not errs or "ref" not in errs[0], errs
        await wa.close()
        await wc.close()
    assert answers["fast"] == answers["models"], answers
    assert answers["fast"][:2] == ["not_member", "not_member"]
    assert "none" not in answers["fast"][:4] and answers["fast"][4] == "none", answers


async def wait_cursor(
    storage: Storage, user_id: str, chat_id: str, done: Callable[[Any], bool]
) -> Any:
    """Poll the ack cursor of device d1 (no event tells when it is durable); its acked_seq."""
    deadline = time.monotonic() + 5.0
    while True:
        async with storage.pool.acquire() as conn:
            value = await conn.fetchval(
                "SELECT acked_seq FROM device_cursors WHERE user_id = $1 AND device_id = 'd1'"
                " AND chat_id = $2",
                int(user_id),
                int(chat_id),
            )
        if done(value):
            return value
        assert time.monotonic() < deadline, f"cursor still {value}"
        await asyncio.sleep(0.02)  # polling the database: there is no event to wait on


# --- ping, typing, read ----------------------------------------------------------------------


async def test_ping_gets_pong(api: Api) -> None:
    a = await api.account()
    wa = await api.ws(a)
    for _ in range(3):
        await wa.send({"type": "ping"})
    for _ in range(3):
        assert await wa.next("pong") == {"type": "pong"}


async def test_typing_reaches_the_peer_but_not_the_typers_devices(api: Api) -> None:
    a, b, chat = await pair(api)
    a1, a2, b1, b2 = (
        await api.ws(a, "d1"),
        await api.ws(a, "d2"),
        await api.ws(b, "d1"),
        await api.ws(b, "d2"),
    )
    await a1.send({"type": "typing", "chat_id": chat})
    expected = {"type": "typing", "chat_id": chat, "user_id": a.id}
    assert await b1.next("typing") == expected
    assert await b2.next("typing") == expected
    await a2.quiet("typing", 0.5)
    await a1.quiet("typing", 0.1)
    assert a1.of_kind("error") == []


async def test_typing_in_a_group_reaches_every_other_member(api: Api) -> None:
    a, b, c = await api.account(), await api.account(), await api.account()
    chat = await api.group(a, [b, c])
    wa, wb, wc = await api.ws(a), await api.ws(b), await api.ws(c)
    await wb.send({"type": "typing", "chat_id": chat})
    for ws in (wa, wc):
        assert await ws.next("typing") == {"type": "typing", "chat_id": chat, "user_id": b.id}
    await wb.quiet("typing", 0.3)


async def test_typing_in_a_foreign_chat_reaches_nobody(api: Api) -> None:
    a, b, chat = await pair(api)
    c = await api.account()
    wa, wb, wc = await api.ws(a), await api.ws(b), await api.ws(c)
    await wc.send({"type": "typing", "chat_id": chat})
    await wa.quiet("typing", 0.4)
    await wb.quiet("typing", 0.1)
    own = await api.direct(c, a)
    await still_open(wc, own)


async def test_typing_in_a_foreign_chat_is_refused_with_not_member(api: Api) -> None:
    """A refused frame is answered with an `error` frame (contract: `error` — "a frame was
    refused"; `read` in a foreign chat is answered so)."""
    _a, _b, chat = await pair(api)
    c = await api.account()
    wc = await api.ws(c)
    await wc.send({"type": "typing", "chat_id": chat})
    err = await wc.next("error", timeout=3)
    assert err["code"] == "not_member"


async def test_read_goes_to_the_peer_and_the_readers_other_devices(api: Api) -> None:
    a, b, chat = await pair(api)
    for i in range(3):
        await api.send(a, chat, f"m{i}")
    a1, b1, b2, b3 = (
        await api.ws(a, "d1"),
        await api.ws(b, "d1"),
        await api.ws(b, "d2"),
        await api.ws(b, "d3"),
    )
    await b1.messages(3, chat)
    await b1.send({"type": "read", "chat_id": chat, "seq": 2})
    expected = {"type": "read", "chat_id": chat, "user_id": b.id, "seq": 2}
    assert await a1.next("read") == expected
    assert await b2.next("read") == expected
    assert await b3.next("read") == expected
    await b1.quiet("read", 0.4)
    r = await api.call("GET", f"/api/v1/chats/{chat}", b.token)
    assert r.status == 200 and r.body["read_seq"] == 2 and r.body["last_seq"] == 3
    assert r.body["unread_count"] == 1
    # the read mark never moves back
    await b1.send({"type": "read", "chat_id": chat, "seq": 1})
    await b1.send({"type": "ping"})
    await b1.next("pong")
    r = await api.call("GET", f"/api/v1/chats/{chat}", b.token)
    assert r.body["read_seq"] == 2


async def test_read_above_last_seq_is_refused(api: Api) -> None:
    a, b, chat = await pair(api)
    await api.send(a, chat, "one")
    wa, wb = await api.ws(a), await api.ws(b)
    await wb.send({"type": "read", "chat_id": chat, "seq": 2})
    err = await wb.next("error")
    error_shape(err)
    assert err["code"] not in {"internal_error", "not_member"} and "ref" not in err
    await wa.quiet("read", 0.3)
    r = await api.call("GET", f"/api/v1/chats/{chat}", b.token)
    assert r.body["read_seq"] == 0
    await still_open(wb, chat)


async def test_read_in_a_foreign_chat_is_not_member(api: Api) -> None:
    a, _b, chat = await pair(api)
    await api.send(a, chat, "one")
    c = await api.account()
    wa, wc = await api.ws(a), await api.ws(c)
    await wc.send({"type": "read", "chat_id": chat, "seq": 1})
    err = await wc.next("error")
    assert err["code"] == "not_member"
    await wa.quiet("read", 0.3)
    own = await api.direct(c, a)
    await still_open(wc, own)
