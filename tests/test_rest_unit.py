"""Pure parts of the REST edge: tokens, passwords, the OpenAPI document, wire shapes, and the error
middleware with the route table (in-process, no database: services are not reached)."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import jwt
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode

from node import domain, errors
from node.config import load_settings
from node.frames import message_dict
from node.http import schemas
from node.http.endpoints import RouteTable, register, reply
from node.http.keys import SETTINGS
from node.http.middleware import error_middleware
from node.http.openapi import REF_TEMPLATE, WS_PATH, build_openapi
from node.http.routes import ENDPOINTS
from node.services.access_tokens import AccessTokens, signing_key
from node.services.passwords import PasswordHasher

SECRET = "unit-test-secret"  # as short as the settings allow
KEY = signing_key(SECRET)
NOW = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


# --- access tokens -----------------------------------------------------------------------------


def test_access_token_round_trip() -> None:
    tokens = AccessTokens(SECRET, ttl=60)
    token = tokens.issue(42)
    assert tokens.verify(token) == 42
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["sub"] == "42" and claims["exp"] - claims["iat"] == 60 and claims["jti"]
    assert tokens.issue(42) != token  # jti differs


def test_expired_access_token() -> None:
    past = AccessTokens(SECRET, ttl=60, clock=lambda: time.time() - 3600)
    with pytest.raises(errors.Unauthorized) as caught:
        AccessTokens(SECRET, ttl=60).verify(past.issue(1))
    assert caught.value.code == "token_expired" and caught.value.status == 401


@pytest.mark.parametrize(
    "token",
    [
        AccessTokens("another-secret-0123", ttl=86400).issue(1),
        jwt.encode(
            {"sub": "1", "iat": int(time.time()), "exp": int(time.time()) + 86400, "jti": "x"},
            None,
            algorithm="none",
        ),
        jwt.encode(
            {"sub": "1", "iat": int(time.time()), "exp": int(time.time()) + 86400, "jti": "x"},
            KEY * 2,
            algorithm="HS512",
        ),
        jwt.encode({"sub": "1", "exp": int(time.time()) + 86400}, KEY, algorithm="HS256"),
        jwt.encode(
            {"sub": "alice", "iat": int(time.time()), "exp": int(time.time()) + 86400, "jti": "x"},
            KEY,
            algorithm="HS256",
        ),
        "garbage",
        "",
        "a.b.c",
    ],
    ids=[
        "other-key",
        "alg-none",
        "hs512",
        "missing-claims",
        "non-numeric-sub",
        "garbage",
        "empty",
        "dots",
    ],
)
def test_invalid_access_tokens(token: str) -> None:
    with pytest.raises(errors.Unauthorized) as caught:
        AccessTokens(SECRET, ttl=60).verify(token)
    assert caught.value.code == "invalid_token"


# --- passwords ---------------------------------------------------------------------------------


async def test_password_hash_and_check() -> None:
    hasher = PasswordHasher(rounds=4)
    hashed = await hasher.hash("correct horse")
    assert hashed.startswith("$2b$04$")
    assert await hasher.check("correct horse", hashed)
    assert not await hasher.check("correct horsE", hashed)
    assert not await hasher.check("correct horse", "not a bcrypt hash")


async def test_long_passwords_keep_every_character() -> None:
    """bcrypt alone reads 72 bytes and bcrypt 5 refuses more; the pre-hash keeps all 128."""
    hasher = PasswordHasher(rounds=4)
    long = "x" * 100
    hashed = await hasher.hash(long)
    assert await hasher.check(long, hashed)
    assert not await hasher.check("x" * 99 + "y", hashed)  # differs past byte 72
    widest = "ж" * 128  # 256 bytes of UTF-8
    assert await hasher.check(widest, await hasher.hash(widest))


async def test_check_absent_spends_a_check() -> None:
    hasher = PasswordHasher(rounds=4)
    await hasher.check_absent("anything at all")  # returns nothing, raises nothing


# --- wire shapes -------------------------------------------------------------------------------


def _wire(data: Any) -> Any:
    """What a client receives: the body encoded as the node encodes it, decoded again."""
    return orjson.loads(orjson.dumps(data, option=orjson.OPT_UTC_Z))


def _agrees(model: type[BaseModel], data: dict[str, Any]) -> None:
    wire = _wire(data)
    model.model_validate(wire)  # every field right, no undocumented one (extra="forbid")
    assert set(wire) <= set(model.model_fields)


def test_message_dict_agrees_with_message_schema() -> None:
    attachment = {
        "id": "kq3Yc1v2QzS0bFhZqg9b3w",
        "content_type": "image/png",
        "size": 3,
        "sha256": "ab" * 32,
        "width": 4,
        "height": 2,
        "has_preview": True,
    }
    message = domain.Message(9, 4, 3, 1, "c-1", "hi", NOW, (attachment,))
    wire = _wire(message_dict(message))
    _agrees(schemas.Message, message_dict(message))
    assert set(wire) == set(schemas.Message.model_fields)
    assert wire["created_at"] == "2024-05-01T12:30:15.123456Z"
    assert wire["id"] == "9" and wire["chat_id"] == "4" and wire["seq"] == 3


def test_renderers_agree_with_schemas() -> None:
    alice = domain.User(1, "alice", NOW)
    group = domain.Chat(5, "group", "G", 1, 12, NOW)
    direct = domain.Chat(6, "direct", None, None, 0, NOW)
    _agrees(schemas.User, schemas.user_out(alice))
    _agrees(schemas.Tokens, schemas.tokens_out(domain.Tokens("a", "r", 900)))
    _agrees(schemas.Chat, schemas.chat_out(domain.ChatView(group, 3, 9, (alice,))))
    listed = schemas.chat_out(domain.ChatView(direct, 0, 0))
    _agrees(schemas.Chat, listed)
    assert "members" not in listed and listed["owner_id"] is None
    _agrees(schemas.ErrorBody, schemas.error_out("not_found", "no"))


def test_ids_in_bodies() -> None:
    assert schemas.AddMember.model_validate({"user_id": "12"}).user_id == 12
    assert schemas.AddMember.model_validate({"user_id": 12}).user_id == 12
    for bad in ["x", "-1", "1.5", True, 2**63, "9" * 20, None]:
        with pytest.raises(ValueError):
            schemas.AddMember.model_validate({"user_id": bad})


# --- OpenAPI -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi(ENDPOINTS)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_openapi_has_every_route(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    for e in ENDPOINTS:
        op = document["paths"][e.path][e.method.lower()]
        assert str(e.status) in op["responses"]
        assert op["security"] == ([{"bearer": []}] if e.auth else [])
    contract = {
        ("post", "/api/v1/auth/register"),
        ("post", "/api/v1/auth/login"),
        ("post", "/api/v1/auth/refresh"),
        ("post", "/api/v1/auth/logout"),
        ("get", "/api/v1/users/me"),
        ("get", "/api/v1/users"),
        ("get", "/api/v1/users/{id}"),
        ("post", "/api/v1/chats"),
        ("get", "/api/v1/chats"),
        ("get", "/api/v1/chats/{id}"),
        ("post", "/api/v1/chats/{id}/members"),
        ("delete", "/api/v1/chats/{id}/members/{user_id}"),
        ("post", "/api/v1/chats/{id}/messages"),
        ("get", "/api/v1/chats/{id}/messages"),
        ("post", "/api/v1/media"),
        ("get", "/api/v1/media/{id}"),
        ("get", "/api/v1/media/{id}/preview"),
        ("get", "/healthz"),
        ("get", WS_PATH),
    }
    documented = {(m, p) for p, ops in document["paths"].items() for m in ops}
    assert contract <= documented
    assert "101" in document["paths"][WS_PATH]["get"]["responses"]
    unauthenticated = {e.path for e in ENDPOINTS if not e.auth}
    assert unauthenticated == {
        "/healthz",
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
    }


def test_openapi_refs_resolve(document: dict[str, Any]) -> None:
    schemas_ = document["components"]["schemas"]
    refs = set(_refs(document))
    assert refs
    prefix = REF_TEMPLATE.format(model="")
    for ref in refs:
        assert ref.startswith(prefix) and ref.removeprefix(prefix) in schemas_, ref


def test_openapi_schemas_are_the_models(document: dict[str, Any]) -> None:
    components = document["components"]["schemas"]
    for e in ENDPOINTS:
        op = document["paths"][e.path][e.method.lower()]
        pairs: list[tuple[type[BaseModel], JsonSchemaMode, dict[str, Any]]] = []
        if e.body is not None:
            content = op["requestBody"]["content"]["application/json"]
            pairs.append((e.body, "validation", content))
        if e.response is not None:
            content = op["responses"][str(e.status)]["content"]["application/json"]
            pairs.append((e.response, "serialization", content))
        for model, mode, content in pairs:
            assert content["schema"] == {"$ref": REF_TEMPLATE.format(model=model.__name__)}
            own = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
            own.pop("$defs", None)
            assert components[model.__name__] == own
        for status, response in op["responses"].items():
            if int(status) >= 400 and int(status) not in e.also:  # /healthz's 503 is Health
                assert response["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/ErrorBody"
                )


# --- the route table and the error middleware --------------------------------------------------

table = RouteTable()


@table.post("/t/{id}/echo", summary="echo", response=schemas.User)
async def echo(request: web.Request, me: int, id: int, body: schemas.Register) -> web.Response:
    return reply({"me": me, "id": id, "username": body.username})


@table.get("/t/boom", summary="boom", response=None)
async def boom(request: web.Request) -> web.Response:
    raise RuntimeError("SELECT secret FROM somewhere")


@table.get("/t/page", summary="page", response=None)
async def page(request: web.Request, query: schemas.HistoryPage) -> web.Response:
    return reply({"limit": query.limit})


def test_route_table_checks_signatures() -> None:
    with pytest.raises(TypeError):

        @RouteTable().get("/x/{id}", summary="x", response=None)
        async def no_id(request: web.Request) -> web.Response:
            raise AssertionError

    with pytest.raises(TypeError):

        @RouteTable().get("/x/{id}", summary="x", response=None)
        async def float_id(request: web.Request, id: float) -> web.Response:
            raise AssertionError


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[error_middleware], client_max_size=1024)
    app[SETTINGS] = load_settings(database_url="postgresql://x", redis_url="redis://x")
    register(app, table, lambda request: _authenticate(request))
    async with TestClient(TestServer(app)) as client:
        yield client


async def _authenticate(request: web.Request) -> int:
    """The route table's authenticator without the node's user lookup (no database here)."""
    from node.http.auth import bearer_token

    token = bearer_token(request)
    if token is None:
        raise errors.Unauthorized()
    return AccessTokens(SECRET, ttl=60).verify(token)


def _bearer(user_id: int = 7) -> dict[str, str]:
    return {"Authorization": "Bearer " + AccessTokens(SECRET, ttl=60).issue(user_id)}


async def _error(response: Any, status: int, code: str) -> str:
    assert response.status == status
    body = await response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    return str(body["error"]["message"])


async def test_table_passes_parsed_inputs(client: TestClient[Any, Any]) -> None:
    body = {"username": "alice", "password": "password1"}
    r = await client.post("/t/5/echo", json=body, headers=_bearer(7))
    assert r.status == 200 and await r.json() == {"me": 7, "id": 5, "username": "alice"}
    # `?token=` is for the WebSocket upgrade only
    r = await client.post(f"/t/5/echo?token={_bearer(8)['Authorization'][7:]}", json=body)
    await _error(r, 401, "unauthorized")


async def test_errors_have_the_contract_shape(client: TestClient[Any, Any]) -> None:
    ok = {"username": "alice", "password": "password1"}
    await _error(await client.post("/t/5/echo", json=ok), 401, "unauthorized")
    await _error(
        await client.post("/t/5/echo", json=ok, headers={"Authorization": "Bearer x"}),
        401,
        "invalid_token",
    )
    await _error(await client.post("/t/x/echo", json=ok, headers=_bearer()), 404, "not_found")
    await _error(await client.get("/nowhere"), 404, "not_found")
    await _error(await client.put("/t/boom"), 405, "method_not_allowed")
    await _error(await client.get("/t/page?limit=500"), 422, "validation_error")
    malformed = await client.post(
        "/t/5/echo", data=b"{", headers={**_bearer(), "Content-Type": "application/json"}
    )
    await _error(malformed, 400, "malformed_json")
    plain = await client.post("/t/5/echo", data=b"{}", headers=_bearer())
    await _error(plain, 400, "malformed_json")
    big = await client.post(
        "/t/5/echo", data=b" " * 2048, headers={**_bearer(), "Content-Type": "application/json"}
    )
    await _error(big, 413, "too_large")


async def test_validation_message_never_echoes_the_password(client: TestClient[Any, Any]) -> None:
    r = await client.post(
        "/t/5/echo", json={"username": "alice", "password": "hunter2"}, headers=_bearer()
    )
    message = await _error(r, 422, "validation_error")
    assert message.startswith("password:") and "hunter2" not in message


async def test_unhandled_error_is_a_bare_500(
    client: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        r = await client.get("/t/boom?token=secret")
        text = await r.text()
    assert r.status == 500
    assert orjson.loads(text) == {"error": {"code": "internal_error", "message": "internal error"}}
    assert "SELECT" not in text
    record = next(r for r in caplog.records if r.msg == "http.unhandled")
    assert record.exc_info is not None and record.path == "/t/boom"  # type: ignore[attr-defined]
