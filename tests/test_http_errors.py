"""The REST edge as a whole, over a real node: every route's refusals (401, 400, 413, 422, unknown
route, wrong method) in the contract's error shape, and the node's own documents (`/healthz`, the
OpenAPI document, `/docs`)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from node.config import Settings
from node.http import schemas
from node.http.routes import ENDPOINTS
from tests.support import NO_SUCH_ID, Account, Api, Response, assert_error

BIG_ID = NO_SUCH_ID

# Every REST route of the contract but push: (method, path, a well-formed body or None).
# Ids in paths are well-formed; the refusals tested here come before anything is looked up.
AUTHENTICATED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/api/v1/auth/logout", {"refresh_token": "r"}),
    ("GET", "/api/v1/users/me", None),
    ("GET", "/api/v1/users", None),
    ("GET", "/api/v1/users/1", None),
    ("POST", "/api/v1/chats", {"kind": "direct", "user_id": "1"}),
    ("GET", "/api/v1/chats", None),
    ("GET", "/api/v1/chats/1", None),
    ("POST", "/api/v1/chats/1/members", {"user_id": "1"}),
    ("DELETE", "/api/v1/chats/1/members/1", None),
    ("POST", "/api/v1/chats/1/messages", {"client_msg_id": "c1", "text": "hi"}),
    ("GET", "/api/v1/chats/1/messages", None),
    ("POST", "/api/v1/media", None),  # a raw body, not JSON
    ("GET", "/api/v1/media/AAAAAAAAAAAAAAAAAAAAAA", None),
    ("GET", "/api/v1/media/AAAAAAAAAAAAAAAAAAAAAA/preview", None),
]
PUBLIC: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/healthz", None),
    ("POST", "/api/v1/auth/register", {"username": "someone", "password": "password-123"}),
    ("POST", "/api/v1/auth/login", {"username": "someone", "password": "password-123"}),
    ("POST", "/api/v1/auth/refresh", {"refresh_token": "r"}),
]
WITH_BODY = [(m, p, b) for m, p, b in PUBLIC + AUTHENTICATED if b is not None]
TEMPLATES = {
    "/api/v1/users/1": "/api/v1/users/{id}",
    "/api/v1/chats/1": "/api/v1/chats/{id}",
    "/api/v1/chats/1/members": "/api/v1/chats/{id}/members",
    "/api/v1/chats/1/members/1": "/api/v1/chats/{id}/members/{user_id}",
    "/api/v1/chats/1/messages": "/api/v1/chats/{id}/messages",
    "/api/v1/media/AAAAAAAAAAAAAAAAAAAAAA": "/api/v1/media/{id}",
    "/api/v1/media/AAAAAAAAAAAAAAAAAAAAAA/preview": "/api/v1/media/{id}/preview",
}


def route_id(route: tuple[str, str, Any]) -> str:
    return f"{route[0]} {route[1]}"


@pytest.fixture
async def me(api: Api) -> Account:
    return await api.account()


def token_for(route: tuple[str, str, Any], me: Account) -> str | None:
    return me.token if route in AUTHENTICATED else None


# --- the table above is the whole REST surface ---------------------------------------------------


def test_tables_cover_every_declared_route() -> None:
    """A new route must be added here (and so get its refusals tested); push is not built yet
    and is covered where it is built."""
    declared = {(e.method, e.path) for e in ENDPOINTS if not e.path.startswith("/api/v1/push")}
    tested = {(m, TEMPLATES.get(p, p)) for m, p, _ in PUBLIC + AUTHENTICATED}
    assert tested == declared


# --- 401 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", AUTHENTICATED, ids=route_id)
async def test_missing_token_is_401(api: Api, route: tuple[str, str, Any]) -> None:
    method, path, body = route
    r = await api.call(method, path, json=body)
    assert_error(r, 401, "unauthorized")


@pytest.mark.parametrize("route", AUTHENTICATED, ids=route_id)
async def test_garbage_token_is_401_invalid_token(api: Api, route: tuple[str, str, Any]) -> None:
    method, path, body = route
    r = await api.call(method, path, "not-a-jwt", json=body)
    assert_error(r, 401, "invalid_token")


@pytest.mark.parametrize(
    "header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token abc"], ids=repr
)
async def test_authorization_header_must_be_bearer(api: Api, me: Account, header: str) -> None:
    r = await api.call("GET", "/api/v1/users/me", headers={"Authorization": header})
    assert_error(r, 401)


async def test_public_routes_need_no_token(api: Api) -> None:
    register = await api.call(
        "POST", "/api/v1/auth/register", json={"username": "free_user", "password": "password-123"}
    )
    assert register.status == 201, register
    login = await api.call(
        "POST", "/api/v1/auth/login", json={"username": "free_user", "password": "password-123"}
    )
    assert login.status == 200, login
    refresh = await api.call(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": login.body["refresh_token"]}
    )
    assert refresh.status == 200, refresh
    assert (await api.call("GET", "/healthz")).status == 200
    assert (await api.call("GET", "/api/v1/openapi.json")).status == 200
    assert (await api.call("GET", "/docs")).status == 200


# --- 400 malformed JSON ------------------------------------------------------------------------


MALFORMED = [
    ("truncated", b'{"username": "x",'),
    ("words", b"not json"),
    ("empty", b""),
    ("single-quotes", b"{'single': 'quotes'}"),
    ("trailing", b'{"a": 1} trailing'),
    ("not-utf8", b"\xff\xfe{}"),
]


def is_error(r: Response, status: int, code: str) -> bool:
    try:
        assert_error(r, status, code)
    except AssertionError:
        return False
    return True


@pytest.mark.parametrize("route", WITH_BODY, ids=route_id)
async def test_malformed_json_is_400(api: Api, me: Account, route: tuple[str, str, Any]) -> None:
    method, path, _ = route
    wrong = []
    for label, payload in MALFORMED:
        r = await api.call(
            method,
            path,
            token_for(route, me),
            data=payload,
            headers={"Content-Type": "application/json"},
        )
        if not is_error(r, 400, "malformed_json"):
            wrong.append((label, r))
    assert not wrong


@pytest.mark.parametrize("route", WITH_BODY, ids=route_id)
async def test_json_body_without_json_content_type_is_400(
    api: Api, me: Account, route: tuple[str, str, Any]
) -> None:
    method, path, body = route
    r = await api.call(
        method,
        path,
        token_for(route, me),
        data=json.dumps(body),
        headers={"Content-Type": "text/plain"},
    )
    assert_error(r, 400, "malformed_json")


# --- 422 validation ----------------------------------------------------------------------------


def invalid_bodies(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """Bodies that break the model of a route whose well-formed body is `body`: not an object,
    each field missing, each field of a wrong type, and an unknown field."""
    out: list[tuple[str, Any]] = [("array", [body]), ("null", None), ("string", "x"), ("empty", {})]
    for name in body:
        out.append((f"missing-{name}", {k: v for k, v in body.items() if k != name}))
        for label, wrong in (("object", {"a": 1}), ("list", [1]), ("null", None)):
            out.append((f"{name}-{label}", {**body, name: wrong}))
    out.append(("extra-field", {**body, "unexpected": 1}))
    return out


@pytest.mark.parametrize("route", WITH_BODY, ids=route_id)
async def test_body_breaking_the_model_is_422(
    api: Api, me: Account, route: tuple[str, str, Any]
) -> None:
    method, path, body = route
    wrong = []
    for label, bad in invalid_bodies(body):
        r = await api.call(
            method,
            path,
            token_for(route, me),
            data=json.dumps(bad),
            headers={"Content-Type": "application/json"},
        )
        if not is_error(r, 422, "validation_error"):
            wrong.append((label, r))
    assert not wrong


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/users", {"limit": "0"}),
        ("/api/v1/users", {"limit": "101"}),
        ("/api/v1/users", {"limit": "ten"}),
        ("/api/v1/users", {"q": "x" * 33}),
        ("/api/v1/chats/1/messages", {"limit": "0"}),
        ("/api/v1/chats/1/messages", {"limit": "201"}),
        ("/api/v1/chats/1/messages", {"after_seq": "-1"}),
        ("/api/v1/chats/1/messages", {"before_seq": "soon"}),
    ],
    ids=repr,
)
async def test_bad_query_is_422(api: Api, me: Account, path: str, params: dict[str, str]) -> None:
    r = await api.call("GET", path, me.token, params=params)
    assert_error(r, 422, "validation_error")


# --- 413 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", WITH_BODY, ids=route_id)
async def test_body_over_the_limit_is_413(
    api: Api, me: Account, settings: Settings, route: tuple[str, str, Any]
) -> None:
    method, path, body = route
    assert settings.max_body_bytes == 256 * 1024  # the default
    field = next(iter(body))
    huge = {**body, field: "x" * (settings.max_body_bytes + 1024)}
    r = await api.call(method, path, token_for(route, me), json=huge)
    assert_error(r, 413, "too_large")


async def test_body_just_under_the_limit_is_not_413(
    api: Api, me: Account, settings: Settings
) -> None:
    """The limit is the configured one, not something smaller: a body under it reaches the
    model (which refuses the oversized text with 422)."""
    body = {"client_msg_id": "c1", "text": "x" * (settings.max_body_bytes - 1024)}
    r = await api.call("POST", "/api/v1/chats/1/messages", me.token, json=body)
    assert_error(r, 422, "validation_error")


# --- unknown routes and wrong methods ----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/nothing-here"),
        ("GET", "/nothing-here"),
        ("POST", "/api/v1/chats/1/nothing"),
        ("GET", "/api/v2/chats"),
        ("GET", "/api/v1/users/1/extra"),
    ],
    ids=repr,
)
async def test_unknown_route_is_404(api: Api, me: Account, method: str, path: str) -> None:
    r = await api.call(method, path, me.token)
    assert_error(r, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("DELETE", "/api/v1/users/me", {"GET"}),
        ("PUT", "/api/v1/chats", {"GET", "POST"}),
        ("GET", "/api/v1/auth/login", {"POST"}),
        ("PATCH", "/api/v1/chats/1/messages", {"GET", "POST"}),
        ("POST", "/healthz", {"GET"}),
    ],
    ids=repr,
)
async def test_wrong_method_is_405_naming_the_allowed_ones(
    api: Api, http: aiohttp.ClientSession, me: Account, method: str, path: str, allowed: set[str]
) -> None:
    headers = {"Authorization": f"Bearer {me.token}"}
    async with http.request(method, api.base + path, headers=headers) as resp:
        body = await resp.json(content_type=None)
        assert resp.content_type == "application/json"
        allow = {m.strip() for m in resp.headers.get("Allow", "").split(",") if m.strip()}
    assert_error(Response(resp.status, body), 405, "method_not_allowed")
    assert allowed <= allow


async def test_errors_are_served_as_json(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(api.base + "/api/v1/users/me") as resp:
        assert resp.status == 401
        assert resp.content_type == "application/json"


# --- the node's own documents ------------------------------------------------------------------


async def test_healthz_is_ok_with_node_id(api: Api, settings: Settings) -> None:
    r = await api.call("GET", "/healthz")
    assert r.status == 200, r
    assert r.body == {"status": "ok", "node_id": settings.node_id}
    schemas.Health.model_validate(r.body)


async def test_openapi_document_lists_every_tested_route(
    api: Api, http: aiohttp.ClientSession
) -> None:
    async with http.get(api.base + "/api/v1/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        document = json.loads(await resp.text())
    assert document["openapi"].startswith("3.")
    for method, path, _ in PUBLIC + AUTHENTICATED:
        template = TEMPLATES.get(path, path)
        assert method.lower() in document["paths"][template], (method, template)


async def test_docs_page_is_html(api: Api, http: aiohttp.ClientSession) -> None:
    async with http.get(api.base + "/docs") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/html"
        page = await resp.text()
    assert "<html" in page.lower() and "/docs/docs.js" in page  # it loads the OpenAPI document
