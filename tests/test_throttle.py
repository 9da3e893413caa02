"""Throttling what is expensive, over real nodes, PostgreSQL and Redis.

Logins and registrations are limited per account and per client address across the cluster (429
`rate_limited` with `Retry-After`), password hashing is fair per client address so a flood of bad
logins does not hold up a good one, and `typing` / `read` floods reach peers as a few frames a
second with the latest read mark kept.

Clients come from different addresses by binding their sockets to other loopback addresses
(127.0.0.2, 127.0.0.3, ...: all of 127.0.0.0/8 is the loopback on Linux).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest

from tests.support import PASSWORD, Account, Api, Response, WsClient, assert_error

WRONG = "wrong-password-1"


@pytest.fixture
async def from_address() -> AsyncIterator[Callable[[Api, str], Any]]:
    """`await from_address(api, "127.0.0.2")`: the same node's API from another client address."""
    async with AsyncExitStack() as stack:

        async def make(api: Api, address: str) -> Api:
            connector = aiohttp.TCPConnector(local_addr=(address, 0))
            http = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            return Api(http, api.base)

        yield make


async def login(api: Api, username: str, password: str = WRONG) -> Response:
    return await api.call(
        "POST", "/api/v1/auth/login", json={"username": username, "password": password}
    )


async def register(api: Api, username: str) -> Response:
    return await api.call(
        "POST", "/api/v1/auth/register", json={"username": username, "password": PASSWORD}
    )


def assert_throttled(r: Response) -> None:
    assert_error(r, 429, "rate_limited")


async def throttled_call(api: Api, method: str, path: str, body: Any) -> tuple[int, str | None]:
    """(status, Retry-After) of one call."""
    async with api.http.request(method, api.base + path, json=body) as r:
        await r.read()
        return r.status, r.headers.get("Retry-After")


def assert_retry_after(value: str | None, at_most: int) -> None:
    assert value is not None and value.isdigit(), value
    assert 1 <= int(value) <= at_most, value


# --- limits per account and per address, across the cluster --------------------------------------


async def test_guessing_one_account_is_limited_across_addresses_and_nodes(
    node_api: Callable[..., Any], from_address: Callable[..., Any]
) -> None:
    """Default: 10 login attempts a minute per account, counted by every node together."""
    _, one = await node_api(auth_throttle=True)
    _, two = await node_api(auth_throttle=True)
    victim = f"victim{uuid.uuid4().hex[:8]}"
    assert (await register(one, victim)).status == 201
    for n in range(10):  # from ten addresses, alternating nodes: no address limit is near
        api = await from_address(one if n % 2 else two, f"127.0.1.{n + 1}")
        assert_error(await login(api, victim), 401, "invalid_credentials")
    guesser = await from_address(two, "127.0.1.99")
    status, retry_after = await throttled_call(
        guesser,
        "POST",
        "/api/v1/auth/login",
        {"username": victim.upper(), "password": WRONG},
    )
    assert status == 429
    assert_retry_after(retry_after, 60)
    # the account is held for everyone now, right password or not (else guessing goes on)
    assert_throttled(await login(await from_address(one, "127.0.1.100"), victim, PASSWORD))


async def test_guessing_from_one_address_is_limited(
    node_api: Callable[..., Any], from_address: Callable[..., Any]
) -> None:
    """Default: 30 login attempts a minute per client address, whatever the accounts."""
    _, api = await node_api(auth_throttle=True)
    guesser = await from_address(api, "127.0.2.1")
    for _ in range(30):
        assert_error(await login(guesser, f"nobody{uuid.uuid4().hex[:8]}"), 401)
    status, retry_after = await throttled_call(
        guesser, "POST", "/api/v1/auth/login", {"username": "someone", "password": WRONG}
    )
    assert status == 429
    assert_retry_after(retry_after, 60)
    # another address is not affected
    other = await from_address(api, "127.0.2.2")
    assert_error(await login(other, "someone"), 401, "invalid_credentials")


async def test_registration_is_limited_per_address(
    node_api: Callable[..., Any], from_address: Callable[..., Any]
) -> None:
    """Default: 10 registrations a minute per client address."""
    _, api = await node_api(auth_throttle=True)
    farm = await from_address(api, "127.0.3.1")
    for _ in range(10):
        assert (await register(farm, f"u{uuid.uuid4().hex[:10]}")).status == 201
    status, retry_after = await throttled_call(
        farm,
        "POST",
        "/api/v1/auth/register",
        {"username": f"u{uuid.uuid4().hex[:10]}", "password": PASSWORD},
    )
    assert status == 429
    assert_retry_after(retry_after, 60)
    assert (await register(await from_address(api, "127.0.3.2"), "fresh_user")).status == 201


async def test_throttle_off_limits_nothing(node_api: Callable[..., Any]) -> None:
    """`MESSENGER_AUTH_THROTTLE=false`, for load tests: no attempt limit, no per-address share."""
    _, api = await node_api(auth_throttle=False)
    victim = await api.account()
    results = await asyncio.gather(*(login(api, victim.username) for _ in range(40)))
    assert {r.status for r in results} == {401}
    assert (await login(api, victim.username, PASSWORD)).status == 200


# --- the hashing workers are shared fairly -------------------------------------------------------


async def test_concurrent_attempts_from_one_address_are_shed_before_hashing(
    node_api: Callable[..., Any], from_address: Callable[..., Any]
) -> None:
    _, api = await node_api(auth_throttle=True, login_limit_address="1000/minute")
    victim = await api.account()
    flooder = await from_address(api, "127.0.4.1")
    results = await asyncio.gather(*(login(flooder, victim.username) for _ in range(20)))
    statuses = [r.status for r in results]
    assert statuses.count(429) >= 10, statuses  # one at a time per address; the rest at once
    assert set(statuses) <= {401, 429}
    for r in results:
        if r.status == 429:
            assert_throttled(r)


async def test_a_good_login_is_served_during_a_flood_of_bad_ones(
    node_api: Callable[..., Any], from_address: Callable[..., Any]
) -> None:
    """50 concurrent bad logins (5 addresses x 10), the attempt limits out of the way: what is
    checked is the hashing gate. Every good login from another address is served (never shed),
    each flooding address has at most one attempt hashed at a time (the rest are refused with
    429 and `Retry-After` before any hash). How long the good login takes under such a flood at
    bcrypt cost 12 is a figure of the benchmark (`python -m loadtest.login_flood`), not a test."""
    _, api = await node_api(
        auth_throttle=True,
        login_limit_account="100000/minute",
        login_limit_address="100000/minute",
    )
    victim = await api.account()
    user = await api.account()
    answered: dict[int, int] = {}
    stop = asyncio.Event()
    flowing = asyncio.Event()

    async def bad_logins(client: Api) -> None:
        while not stop.is_set():
            r = await login(client, victim.username)
            answered[r.status] = answered.get(r.status, 0) + 1
            if r.status == 429:
                assert_throttled(r)
            if answered.get(401, 0) >= 10 and answered.get(429, 0) >= 10:
                flowing.set()

    clients = [await from_address(api, f"127.0.5.{n}") for n in range(1, 6)]
    flood = [asyncio.create_task(bad_logins(c)) for c in clients for _ in range(10)]
    try:
        async with asyncio.timeout(60):
            await flowing.wait()
        good = [await login(api, user.username, PASSWORD) for _ in range(5)]
    finally:
        stop.set()
        await asyncio.gather(*flood)
    assert [r.status for r in good] == [200] * 5, good
    assert set(answered) <= {401, 429}, answered


# --- typing and read floods -------------------------------------------------------------------


async def chat_pair(api: Api) -> tuple[Account, Account, str, WsClient, WsClient]:
    a, b = await api.account(), await api.account()
    chat = await api.direct(a, b)
    return a, b, chat, await api.ws(a, "typer"), await api.ws(b, "peer")


async def flood(ws: WsClient, frame: Callable[[int], dict[str, Any]], seconds: float) -> int:
    """Send frames as fast as the socket takes them for `seconds`; how many were sent."""
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for _ in range(50):
            sent += 1
            await ws.send(frame(sent))
        await asyncio.sleep(0)  # let the reader of the other socket run (same event loop)
    return sent


async def test_a_typing_flood_reaches_peers_as_a_few_frames_a_second(api: Api) -> None:
    interval, seconds = 0.5, 2.0  # the default signal_interval
    a, _b, chat, typer, peer = await chat_pair(api)
    sent = await flood(typer, lambda n: {"type": "typing", "chat_id": chat}, seconds)
    # a read mark sent after the flood comes to the peer after every typing frame that will
    await typer.send({"type": "read", "chat_id": chat, "seq": 0})
    await peer.next("read", where=lambda f: f["user_id"] == a.id)
    delivered = len(peer.of_kind("typing"))
    print(f"\ntyping: {sent} sent in {seconds} s, {delivered} delivered to the peer")
    assert 1 <= delivered <= seconds / interval + 2, delivered


async def test_a_read_flood_is_coalesced_and_the_latest_mark_arrives(api: Api) -> None:
    interval, seconds = 0.5, 2.0
    a, _b, chat, typer, peer = await chat_pair(api)
    marks = 200
    for n in range(marks):
        assert (await api.send(a, chat, f"m{n}")).status == 201
    sent = await flood(
        typer, lambda n: {"type": "read", "chat_id": chat, "seq": min(n, marks)}, seconds
    )
    last = await peer.next("read", where=lambda f: f["seq"] == marks, timeout=10)
    assert last["user_id"] == a.id
    reads = [f["seq"] for f in peer.of_kind("read")]
    print(f"\nread: {sent} sent in {seconds} s, {len(reads)} delivered to the peer")
    assert len(reads) <= seconds / interval + 3, reads
    assert reads == sorted(reads)
    view = await api.call("GET", f"/api/v1/chats/{chat}", a.token)
    assert view.body["read_seq"] == marks


async def test_a_held_read_mark_is_sent_when_the_socket_closes(api: Api) -> None:
    a, _b, chat, typer, peer = await chat_pair(api)
    for n in range(3):
        assert (await api.send(a, chat, f"m{n}")).status == 201
    await typer.send({"type": "read", "chat_id": chat, "seq": 1})
    await typer.send({"type": "read", "chat_id": chat, "seq": 3})  # held: within the interval
    await typer.close()
    await peer.next("read", where=lambda f: f["seq"] == 3)
    view = await api.call("GET", f"/api/v1/chats/{chat}", a.token)
    assert view.body["read_seq"] == 3
