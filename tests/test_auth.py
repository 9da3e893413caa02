"""`/api/v1/auth/*` over a real node: registration rules, login, refresh-token rotation with family
revocation, logout, how refresh tokens are stored, and which access tokens are refused."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from typing import Any

import jwt
import jwt.warnings
import pytest

from node.config import Settings
from node.http import schemas
from node.services.access_tokens import signing_key
from node.storage import Storage
from tests.support import PASSWORD, Api, Response, assert_error


async def register(api: Api, username: str, password: str = PASSWORD) -> Response:
    return await api.call(
        "POST", "/api/v1/auth/register", json={"username": username, "password": password}
    )


async def login(api: Api, username: str, password: str = PASSWORD) -> Response:
    return await api.call(
        "POST", "/api/v1/auth/login", json={"username": username, "password": password}
    )


async def refresh(api: Api, refresh_token: str) -> Response:
    return await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})


async def me_status(api: Api, access_token: str) -> int:
    return (await api.call("GET", "/api/v1/users/me", access_token)).status


def claims(sub: str, *, exp_in: int) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now - 60, "exp": now + exp_in, "jti": "test-jti"}


# --- register ----------------------------------------------------------------------------------


async def test_register_is_201_with_the_user(api: Api) -> None:
    r = await register(api, "Alice_01")
    assert r.status == 201, r
    body = schemas.Registered.model_validate(r.body)  # exactly {"user": User}, no tokens
    assert body.user.username == "Alice_01"
    assert r.body["user"]["id"].isdigit()
    assert r.body["user"]["created_at"].endswith("Z")


async def test_duplicate_username_is_409(api: Api) -> None:
    assert (await register(api, "alice")).status == 201
    assert_error(await register(api, "alice", "another-password"), 409, "username_taken")


@pytest.mark.parametrize("other", ["ALICE", "Alice", "aLiCe"])
async def test_username_taken_regardless_of_case(api: Api, other: str) -> None:
    assert (await register(api, "alice")).status == 201
    assert_error(await register(api, other), 409, "username_taken")


@pytest.mark.parametrize(
    "username",
    ["abc", "a" * 32, "A.b-c_9", "___", "..."],
    ids=["3", "32", "mixed", "under", "dots"],
)
async def test_valid_usernames_register(api: Api, username: str) -> None:
    r = await register(api, username)
    assert r.status == 201, r
    assert r.body["user"]["username"] == username


@pytest.mark.parametrize(
    "username",
    ["", "ab", "a" * 33, "with space", "at@sign", "ümlaut", "tab\tbed", "slash/", "new\nline"],
    ids=["empty", "2", "33", "space", "at", "non-ascii", "tab", "slash", "newline"],
)
async def test_invalid_usernames_are_422(api: Api, username: str) -> None:
    assert_error(await register(api, username), 422, "validation_error")


@pytest.mark.parametrize("password", ["x" * 8, "y" * 128, "ж" * 128, "🔑" * 8], ids=len)
async def test_password_of_8_to_128_characters_registers_and_logs_in(
    api: Api, password: str
) -> None:
    assert (await register(api, "carol", password)).status == 201
    assert (await login(api, "carol", password)).status == 200


@pytest.mark.parametrize("password", ["x" * 7, "y" * 129, ""], ids=len)
async def test_password_outside_8_to_128_is_422(api: Api, password: str) -> None:
    r = await register(api, "carol", password)
    assert_error(r, 422, "validation_error")
    if password:
        assert password not in r.body["error"]["message"]  # the password is never echoed


async def test_long_password_is_significant_past_72_bytes(api: Api) -> None:
    """bcrypt alone reads 72 bytes: two passwords sharing those must still differ."""
    password = "p" * 72 + "q" * 28  # 100 characters
    assert (await register(api, "dave", password)).status == 201
    assert (await login(api, "dave", password)).status == 200
    assert_error(await login(api, "dave", "p" * 72 + "z" * 28), 401, "invalid_credentials")
    assert_error(await login(api, "dave", "p" * 72), 401, "invalid_credentials")


async def test_password_is_not_stored_in_clear(api: Api, storage: Storage) -> None:
    password = "clear-text-password-9"
    assert (await register(api, "erin", password)).status == 201
    stored = await storage.pool.fetchval("SELECT password_hash FROM users WHERE username = 'erin'")
    assert password not in stored


# --- login -------------------------------------------------------------------------------------


async def test_login_returns_bearer_tokens(api: Api) -> None:
    assert (await register(api, "frank")).status == 201
    r = await login(api, "frank")
    assert r.status == 200, r
    tokens = schemas.Tokens.model_validate(r.body)
    assert tokens.token_type == "bearer"
    assert tokens.expires_in == 900
    assert tokens.access_token != tokens.refresh_token
    me = await api.call("GET", "/api/v1/users/me", tokens.access_token)
    assert me.status == 200 and me.body["username"] == "frank"


async def test_access_token_lifetime_is_expires_in(api: Api, settings: Settings) -> None:
    assert (await register(api, "gina")).status == 201
    r = await login(api, "gina")
    decoded = jwt.decode(
        r.body["access_token"], signing_key(settings.jwt_secret or ""), algorithms=["HS256"]
    )
    assert decoded["exp"] - decoded["iat"] == r.body["expires_in"] == settings.access_token_ttl


async def test_each_login_gives_new_tokens(api: Api) -> None:
    assert (await register(api, "hank")).status == 201
    first, second = await login(api, "hank"), await login(api, "hank")
    assert first.body["refresh_token"] != second.body["refresh_token"]
    assert first.body["access_token"] != second.body["access_token"]


async def test_wrong_password_is_401_invalid_credentials(api: Api) -> None:
    assert (await register(api, "ivy")).status == 201
    assert_error(await login(api, "ivy", "wrong-password"), 401, "invalid_credentials")


async def test_unknown_user_fails_exactly_like_a_wrong_password(api: Api) -> None:
    assert (await register(api, "jack")).status == 201
    unknown = await login(api, "nobody-here")
    wrong = await login(api, "jack", "wrong-password")
    assert_error(unknown, 401, "invalid_credentials")
    assert unknown.body == wrong.body


@pytest.mark.parametrize(
    "body",
    [
        {"username": "jack"},
        {"password": PASSWORD},
        {"username": 1, "password": PASSWORD},
        {"username": "jack", "password": PASSWORD, "remember": True},
    ],
    ids=["no-password", "no-username", "number", "extra"],
)
async def test_malformed_login_is_422(api: Api, body: dict[str, Any]) -> None:
    assert_error(await api.call("POST", "/api/v1/auth/login", json=body), 422, "validation_error")


# --- refresh -----------------------------------------------------------------------------------


async def test_refresh_rotates_the_pair(api: Api) -> None:
    alice = await api.account()
    r = await refresh(api, alice.refresh_token)
    assert r.status == 200, r
    tokens = schemas.Tokens.model_validate(r.body)
    assert tokens.refresh_token != alice.refresh_token
    assert tokens.token_type == "bearer" and tokens.expires_in == 900
    assert await me_status(api, tokens.access_token) == 200
    assert (await refresh(api, tokens.refresh_token)).status == 200  # the successor works


async def test_spent_refresh_token_is_401(api: Api) -> None:
    alice = await api.account()
    assert (await refresh(api, alice.refresh_token)).status == 200
    assert_error(await refresh(api, alice.refresh_token), 401, "invalid_refresh_token")


async def test_reusing_a_spent_refresh_token_revokes_its_family(api: Api) -> None:
    alice = await api.account()
    successor = (await refresh(api, alice.refresh_token)).body["refresh_token"]
    assert_error(await refresh(api, alice.refresh_token), 401)  # the reuse
    assert_error(await refresh(api, successor), 401, "invalid_refresh_token")


async def test_family_revocation_spares_other_logins(api: Api) -> None:
    alice = await api.account()
    other = (await login(api, alice.username)).body["refresh_token"]  # a second family
    assert (await refresh(api, alice.refresh_token)).status == 200
    assert_error(await refresh(api, alice.refresh_token), 401)  # revokes the first family only
    assert (await refresh(api, other)).status == 200


async def test_unknown_refresh_token_is_401(api: Api) -> None:
    assert_error(await refresh(api, "never-issued"), 401, "invalid_refresh_token")


async def test_refresh_rejects_an_access_token(api: Api) -> None:
    alice = await api.account()
    assert_error(await refresh(api, alice.token), 401, "invalid_refresh_token")


@pytest.mark.parametrize("value", ["", "r" * 513, 42, None], ids=["empty", "513", "int", "null"])
async def test_malformed_refresh_token_is_422(api: Api, value: Any) -> None:
    r = await api.call("POST", "/api/v1/auth/refresh", json={"refresh_token": value})
    assert_error(r, 422, "validation_error")


async def test_refresh_tokens_are_stored_as_digests_only(api: Api, storage: Storage) -> None:
    alice = await api.account()
    rotated = (await refresh(api, alice.refresh_token)).body["refresh_token"]
    raw = (alice.refresh_token, rotated)
    digests = await storage.pool.fetch("SELECT token_hash FROM refresh_tokens")
    assert {bytes(r["token_hash"]) for r in digests} == {
        hashlib.sha256(t.encode()).digest() for t in raw
    }
    tables = await storage.pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert "refresh_tokens" in {t["tablename"] for t in tables}
    for table in tables:  # every row of every table as text (bytea shows as hex)
        for row in await storage.pool.fetch(f'SELECT t::text AS r FROM "{table["tablename"]}" t'):
            for token in raw:
                assert token not in row["r"], table
                assert token.encode().hex() not in row["r"], table


# --- logout ------------------------------------------------------------------------------------


async def test_logout_is_204_and_the_refresh_token_stops_working(api: Api) -> None:
    alice = await api.account()
    r = await api.call(
        "POST", "/api/v1/auth/logout", alice.token, json={"refresh_token": alice.refresh_token}
    )
    assert r.status == 204 and r.body is None, r
    assert_error(await refresh(api, alice.refresh_token), 401, "invalid_refresh_token")


async def test_logout_revokes_refreshed_successors_too(api: Api) -> None:
    alice = await api.account()
    successor = (await refresh(api, alice.refresh_token)).body["refresh_token"]
    r = await api.call(
        "POST", "/api/v1/auth/logout", alice.token, json={"refresh_token": alice.refresh_token}
    )
    assert r.status == 204
    assert_error(await refresh(api, successor), 401, "invalid_refresh_token")


async def test_logout_with_someone_elses_refresh_token_changes_nothing(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    r = await api.call(
        "POST", "/api/v1/auth/logout", alice.token, json={"refresh_token": bob.refresh_token}
    )
    assert r.status == 204
    assert (await refresh(api, bob.refresh_token)).status == 200


async def test_logout_twice_is_204(api: Api) -> None:
    alice = await api.account()
    body = {"refresh_token": alice.refresh_token}
    assert (await api.call("POST", "/api/v1/auth/logout", alice.token, json=body)).status == 204
    assert (await api.call("POST", "/api/v1/auth/logout", alice.token, json=body)).status == 204


async def test_logout_needs_an_access_token(api: Api) -> None:
    alice = await api.account()
    r = await api.call("POST", "/api/v1/auth/logout", json={"refresh_token": alice.refresh_token})
    assert_error(r, 401)
    assert (await refresh(api, alice.refresh_token)).status == 200  # nothing was revoked


# --- access tokens the node refuses ------------------------------------------------------------


async def test_token_made_with_the_node_key_is_accepted(api: Api, settings: Settings) -> None:
    """Control for the refusals below: a token made here the node's way does work."""
    alice = await api.account()
    token = jwt.encode(
        claims(alice.id, exp_in=600), signing_key(settings.jwt_secret or ""), algorithm="HS256"
    )
    r = await api.call("GET", "/api/v1/users/me", token)
    assert r.status == 200 and r.body["id"] == alice.id


async def test_expired_access_token_is_401_token_expired(api: Api, settings: Settings) -> None:
    alice = await api.account()
    token = jwt.encode(
        claims(alice.id, exp_in=-30), signing_key(settings.jwt_secret or ""), algorithm="HS256"
    )
    assert_error(await api.call("GET", "/api/v1/users/me", token), 401, "token_expired")
    assert_error(await api.call("GET", "/api/v1/chats", token), 401, "token_expired")


async def test_alg_none_token_is_401(api: Api) -> None:
    alice = await api.account()
    token = jwt.encode(claims(alice.id, exp_in=600), None, algorithm="none")
    assert_error(await api.call("GET", "/api/v1/users/me", token), 401, "invalid_token")


@pytest.mark.parametrize("which", ["another-secret", "raw-secret-not-derived-key"])
async def test_token_signed_with_another_key_is_401(
    api: Api, settings: Settings, which: str
) -> None:
    secret = settings.jwt_secret or ""
    key = signing_key(secret + "-other") if which == "another-secret" else secret.encode()
    alice = await api.account()
    with warnings.catch_warnings():  # PyJWT warns that a raw secret is a short key
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        token = jwt.encode(claims(alice.id, exp_in=600), key, algorithm="HS256")
    assert_error(await api.call("GET", "/api/v1/users/me", token), 401, "invalid_token")


async def test_token_with_a_tampered_subject_is_401(api: Api) -> None:
    alice, bob = await api.account(), await api.account()
    header, payload, signature = alice.token.split(".")
    decoded = json.loads(jwt.utils.base64url_decode(payload))
    decoded["sub"] = bob.id
    forged = jwt.utils.base64url_encode(json.dumps(decoded).encode()).decode()
    token = f"{header}.{forged}.{signature}"
    assert_error(await api.call("GET", "/api/v1/users/me", token), 401, "invalid_token")


async def test_refresh_token_is_not_an_access_token(api: Api) -> None:
    alice = await api.account()
    assert_error(await api.call("GET", "/api/v1/users/me", alice.refresh_token), 401)
