"""`/api/v1/users*` over a real node: who am I, a user by id, and prefix search."""

from __future__ import annotations

from typing import Any

import pytest

from node.http import schemas
from tests.support import Account, Api, assert_error


async def search(api: Api, who: Account, **params: Any) -> list[str]:
    r = await api.call("GET", "/api/v1/users", who.token, params=params)
    assert r.status == 200, r
    schemas.UserList.model_validate(r.body)
    return [u["username"] for u in r.body["items"]]


async def test_me_is_the_token_owner(api: Api) -> None:
    alice = await api.account("alice")
    await api.account("bob")
    r = await api.call("GET", "/api/v1/users/me", alice.token)
    assert r.status == 200, r
    user = schemas.User.model_validate(r.body)
    assert (user.id, user.username) == (alice.id, "alice")
    assert r.body["created_at"].endswith("Z")


async def test_user_by_id(api: Api) -> None:
    alice, bob = await api.account("alice"), await api.account("bob")
    r = await api.call("GET", f"/api/v1/users/{bob.id}", alice.token)
    assert r.status == 200, r
    schemas.User.model_validate(r.body)
    assert r.body["id"] == bob.id and r.body["username"] == "bob"


async def test_user_by_id_is_the_same_record_as_me(api: Api) -> None:
    alice = await api.account()
    by_id = await api.call("GET", f"/api/v1/users/{alice.id}", alice.token)
    me = await api.call("GET", "/api/v1/users/me", alice.token)
    assert by_id.body == me.body


async def test_unknown_user_id_is_404(api: Api) -> None:
    alice = await api.account()
    assert_error(await api.call("GET", "/api/v1/users/9000000000", alice.token), 404, "not_found")


@pytest.mark.parametrize(
    "segment", ["abc", "-1", "1.5", "1e3", "%20", "99999999999999999999", "\uff19"], ids=repr
)
async def test_user_id_that_cannot_be_an_id_is_404(api: Api, segment: str) -> None:
    alice = await api.account()
    assert_error(await api.call("GET", f"/api/v1/users/{segment}", alice.token), 404, "not_found")


async def test_search_by_prefix_is_case_insensitive(api: Api) -> None:
    me = await api.account("zed")
    for name in ("alpha_one", "Alphabet", "ALPHA.two", "beta", "xalpha"):
        await api.account(name)
    expected = {"alpha_one", "ALPHA.two", "Alphabet"}
    assert set(await search(api, me, q="alp")) == expected
    assert set(await search(api, me, q="ALPHA")) == expected
    assert await search(api, me, q="alpha.") == ["ALPHA.two"]
    assert await search(api, me, q="gamma") == []


async def test_search_is_alphabetical_and_respects_limit(api: Api) -> None:
    me = await api.account("zed")
    for i in (3, 0, 4, 1, 2):
        await api.account(f"user{i}")
    assert await search(api, me, q="user", limit=2) == ["user0", "user1"]
    assert await search(api, me, q="user", limit=100) == [f"user{i}" for i in range(5)]


async def test_search_default_limit_is_20(api: Api) -> None:
    me = await api.account("zed")
    for i in range(22):
        await api.account(f"member{i:02d}")
    assert len(await search(api, me, q="member")) == 20


async def test_underscore_in_query_is_literal(api: Api) -> None:
    me = await api.account("zed")
    await api.account("ab_cd")
    await api.account("abxcd")
    assert await search(api, me, q="ab_") == ["ab_cd"]


async def test_percent_in_query_is_literal(api: Api) -> None:
    me = await api.account("zed")
    await api.account("abcd")
    assert await search(api, me, q="%") == []
    assert await search(api, me, q="a%") == []
    assert await search(api, me, q="ab%d") == []


async def test_backslash_in_query_is_literal(api: Api) -> None:
    me = await api.account("zed")
    await api.account("abcd")
    assert await search(api, me, q="\\") == []
    assert await search(api, me, q="a\\b") == []


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "101"}, {"limit": "-5"}, {"limit": "many"}, {"q": "x" * 33}],
    ids=repr,
)
async def test_bad_search_parameters_are_422(api: Api, params: dict[str, str]) -> None:
    me = await api.account()
    r = await api.call("GET", "/api/v1/users", me.token, params=params)
    assert_error(r, 422, "validation_error")
