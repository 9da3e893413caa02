"""Client pieces shared by the workloads other than 'pairs': many users set up fast, WebSockets
spread over loopback source addresses, and a `Socket` that reads frames like a client does.

* `Sessions`: one aiohttp session per source address (127.0.0.x), so that tens of thousands of
  sockets to one node do not run out of ephemeral ports; `pick(i)` spreads connections over them.
* `signup_many`: register + log in many users over REST with bounded concurrency (the nodes run
  with MESSENGER_BCRYPT_ROUNDS=4, so this is cheap).
* `Socket`: opens `/api/v1/ws`, waits for `ready`, then reads every frame: `message` frames are
  checked per chat for duplicate seqs (`Inbox`) and acked like a client (the highest seq per
  chat, coalesced ~20 ms, as the pairs workload does), `presence` frames are counted in both
  shapes (one user, or a batch `users` list), `sent` / `error` frames go to the owner. A socket
  that closes without being asked to counts as dropped.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Protocol

import aiohttp
import orjson

now_ns = time.perf_counter_ns
PASSWORD = "bench-password-1"
ACK_DELAY = 0.02


async def api(
    http: aiohttp.ClientSession,
    base: str,
    method: str,
    path: str,
    token: str | None = None,
    **kw: Any,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, f"{base}/api/v1{path}", headers=headers, **kw) as r:
        body = await r.read()
        if r.status >= 300:
            raise RuntimeError(f"{method} {path} -> {r.status} {body[:200]!r}")
        return orjson.loads(body)


async def signup(http: aiohttp.ClientSession, base: str, user: str) -> tuple[str, str]:
    """Register and log in; (user id, access token)."""
    creds = {"username": user, "password": PASSWORD}
    js = await api(http, base, "POST", "/auth/register", json=creds)
    tok = await api(http, base, "POST", "/auth/login", json=creds)
    return str(js["user"]["id"]), tok["access_token"]


def source_addrs(count: int, first: int = 2) -> list[str]:
    """`count` loopback source addresses 127.0.0.<first>…; all of 127/8 is local on Linux."""
    return [f"127.0.0.{first + i}" for i in range(max(1, count))]


class Sessions:
    """One ClientSession per source address (or one with the default source)."""

    def __init__(self, addrs: list[str] | None = None) -> None:
        self.list = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=0, local_addr=(a, 0) if a else None, force_close=False
                )
            )
            for a in (addrs or [""])
        ]

    def pick(self, i: int) -> aiohttp.ClientSession:
        return self.list[i % len(self.list)]

    @property
    def rest(self) -> aiohttp.ClientSession:
        return self.list[0]

    async def close(self) -> None:
        await asyncio.gather(*(s.close() for s in self.list), return_exceptions=True)


async def signup_many(
    http: aiohttp.ClientSession, base: str, names: list[str], concurrency: int = 32
) -> dict[str, tuple[str, str]]:
    """{name: (user id, access token)} for every name, registered and logged in."""
    sem = asyncio.Semaphore(concurrency)
    out: dict[str, tuple[str, str]] = {}

    async def one(name: str) -> None:
        async with sem:
            out[name] = await signup(http, base, name)

    await asyncio.gather(*(one(n) for n in names))
    return out


async def create_chat(
    http: aiohttp.ClientSession, base: str, token: str, body: dict[str, Any]
) -> str:
    js = await api(http, base, "POST", "/chats", token, json=body)
    return str(js["id"])


class Owner(Protocol):
    """What a Socket reports to (a workload's worker)."""

    def on_message(self, sock: Socket, m: dict[str, Any], now: int) -> None: ...
    def on_sent(self, sock: Socket, f: dict[str, Any]) -> None: ...
    def on_error(self, sock: Socket, f: dict[str, Any]) -> None: ...


class Stats:
    """Counters of one worker's sockets (summed by the parent)."""

    def __init__(self) -> None:
        self.dup = self.out_of_order = self.dropped = 0
        self.presence_frames = self.presence_users = 0
        self.connect_failures = 0  # attempts that failed and were tried again
        self.error_codes: dict[str, int] = {}
        self.first_error = self.first_connect_error = ""

    def error(self, f: dict[str, Any]) -> None:
        code = str(f.get("code"))
        self.error_codes[code] = self.error_codes.get(code, 0) + 1
        self.first_error = self.first_error or str(f)[:300]


class Socket:
    """One device's WebSocket: reads frames, dedups and acks messages, counts presence."""

    def __init__(
        self,
        owner: Owner,
        stats: Stats,
        index: int,
        user_id: str,
        *,
        ack: bool = True,
        watch: set[str] | None = None,
    ) -> None:
        self.owner, self.stats, self.index, self.me = owner, stats, index, user_id
        self.ack_enabled = ack
        self.watch = watch  # user ids whose `online` presence we note (in self.seen_online)
        self.seen_online: set[str] = set()
        self.presence_frames = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.seen: dict[str, set[int]] = {}
        self.last: dict[str, int] = {}
        self.pending_ack: dict[str, int] = {}
        self.acks: set[asyncio.Future[None]] = set()
        self.reader: asyncio.Task[None] | None = None
        self.closing = False
        self.ready_at = 0  # ns

    async def connect(
        self,
        http: aiohttp.ClientSession,
        base: str,
        token: str,
        device: str,
        timeout: float = 60.0,
    ) -> None:
        """Open the socket and wait for `ready`; then read in the background."""
        self.closing = False
        ws = await http.ws_connect(
            f"{base}/api/v1/ws?device_id={device}",
            max_msg_size=0,
            heartbeat=None,
            headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10.0),
        )
        first = await ws.receive(timeout=timeout)
        if first.type != aiohttp.WSMsgType.TEXT or orjson.loads(first.data).get("type") != "ready":
            await ws.close()
            raise RuntimeError(f"expected a ready frame, got {first.data!r:.200}")
        self.ready_at = now_ns()
        self.ws = ws
        self.reader = asyncio.ensure_future(self.read(ws))

    async def connect_retrying(
        self,
        http: aiohttp.ClientSession,
        base: str,
        token: str,
        device: str,
        max_time: float,
        attempt_timeout: float = 10.0,
    ) -> None:
        """`connect`, tried again like a client after a failed attempt (refused, no `ready`
        within `attempt_timeout` s): 0.2 s, 0.4 s, … at most 2 s apart (jittered), for up to
        `max_time` s. Every failed attempt counts in `stats.connect_failures`."""
        deadline = now_ns() + int(max_time * 1e9)
        delay = 0.2
        while True:
            try:
                async with asyncio.timeout(attempt_timeout):
                    await self.connect(http, base, token, device)
                return
            except (aiohttp.ClientError, TimeoutError, RuntimeError, OSError) as e:
                self.stats.connect_failures += 1
                self.stats.first_connect_error = self.stats.first_connect_error or repr(e)[:300]
                if now_ns() + delay * 1e9 > deadline:
                    raise
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(2.0, delay * 2)

    async def read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        owner, stats = self.owner, self.stats
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            f = orjson.loads(msg.data)
            kind = f.get("type")
            if kind == "message":
                m = f["message"]
                if self.accept(m["chat_id"], m["seq"]):
                    owner.on_message(self, m, now_ns())
            elif kind == "presence":
                self.on_presence(f)
            elif kind == "sent":
                owner.on_sent(self, f)
            elif kind == "error":
                stats.error(f)
                owner.on_error(self, f)
        if not self.closing:
            stats.dropped += 1

    def accept(self, chat: str, seq: int) -> bool:
        """False (and counted) for a seq this connection already had; schedules the ack."""
        seen = self.seen.setdefault(chat, set())
        if seq in seen:
            self.stats.dup += 1
            return False
        seen.add(seq)
        if seq < self.last.get(chat, 0):
            self.stats.out_of_order += 1
        else:
            self.last[chat] = seq
        if self.ack_enabled:
            if chat not in self.pending_ack:
                asyncio.get_running_loop().call_later(ACK_DELAY, self.flush_ack, chat)
            self.pending_ack[chat] = max(self.pending_ack.get(chat, 0), seq)
        return True

    def flush_ack(self, chat: str) -> None:
        seq = self.pending_ack.pop(chat, None)
        if seq is not None:
            self.send_frame({"type": "ack", "chat_id": chat, "seq": seq})

    def ack_all(self) -> None:
        """Ack the highest seq seen in every chat now (a client that caught up)."""
        for chat, seq in self.last.items():
            self.send_frame({"type": "ack", "chat_id": chat, "seq": seq})

    def on_presence(self, f: dict[str, Any]) -> None:
        users = f.get("users")
        if users is None:
            users = [f]
        self.presence_frames += 1
        self.stats.presence_frames += 1
        self.stats.presence_users += len(users)
        if self.watch:
            for u in users:
                uid = str(u.get("user_id"))
                if u.get("online") and uid in self.watch:
                    self.seen_online.add(uid)

    def send_frame(self, frame: dict[str, Any]) -> None:
        """Queue a frame (fire and forget, but owned: closing the socket awaits them)."""
        if self.ws is None or self.ws.closed or self.closing:
            return
        task = asyncio.ensure_future(self.ws.send_str(orjson.dumps(frame).decode()))
        self.acks.add(task)
        task.add_done_callback(self.acks.discard)

    async def send(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(orjson.dumps(frame).decode())

    async def close(self) -> None:
        self.closing = True
        if self.acks:
            await asyncio.gather(*self.acks, return_exceptions=True)
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
