"""Client-side helpers for tests: a REST client, a WebSocket client that waits on frames (never
sleeps), and node processes started as a user would start them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "password-123"
NO_SUCH_ID = "9000000000"  # a well-formed id that names nothing
# what must never appear in an error body
LEAKS = ("Traceback", "traceback", 'File "', "asyncpg", "SELECT", "INSERT", "UPDATE ", "psycopg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@dataclass
class Response:
    status: int
    body: Any


def assert_error(r: Response, status: int, code: str | None = None) -> None:
    """`r` is an error of `status` (and `code`) in exactly the contract's shape, leaking nothing."""
    from node.http.schemas import ErrorBody

    assert r.status == status, r
    assert isinstance(r.body, dict) and set(r.body) == {"error"}, r
    assert set(r.body["error"]) == {"code", "message"}, r
    ErrorBody.model_validate(r.body)
    assert r.body["error"]["code"] and r.body["error"]["message"], r
    if code is not None:
        assert r.body["error"]["code"] == code, r
    text = json.dumps(r.body)
    assert not any(leak in text for leak in LEAKS), r


@dataclass
class Account:
    id: str
    username: str
    token: str
    refresh_token: str


class Api:
    """REST over a real HTTP connection."""

    def __init__(self, http: aiohttp.ClientSession, base_url: str) -> None:
        self.http = http
        self.base = base_url.rstrip("/")
        self.sockets: list[WsClient] = []

    async def close(self) -> None:
        for ws in self.sockets:
            await ws.close()

    async def call(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> Response:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = path if path.startswith("http") else self.base + path
        async with self.http.request(method, url, headers=headers, **kwargs) as r:
            text = await r.text()
            try:
                body: Any = await r.json(content_type=None) if text else None
            except ValueError:
                body = text
            return Response(r.status, body)

    async def account(self, username: str | None = None, password: str = PASSWORD) -> Account:
        username = username or f"u{uuid.uuid4().hex[:10]}"
        r = await self.call(
            "POST", "/api/v1/auth/register", json={"username": username, "password": password}
        )
        assert r.status == 201, r
        t = await self.call(
            "POST", "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert t.status == 200, t
        return Account(
            r.body["user"]["id"], username, t.body["access_token"], t.body["refresh_token"]
        )

    async def direct(self, a: Account, b: Account) -> str:
        r = await self.call(
            "POST", "/api/v1/chats", a.token, json={"kind": "direct", "user_id": b.id}
        )
        assert r.status in (200, 201), r
        return str(r.body["id"])

    async def group(self, owner: Account, members: list[Account], title: str = "group") -> str:
        r = await self.call(
            "POST",
            "/api/v1/chats",
            owner.token,
            json={"kind": "group", "title": title, "member_ids": [m.id for m in members]},
        )
        assert r.status == 201, r
        return str(r.body["id"])

    async def send(
        self, who: Account, chat_id: str, text: str, cmid: str | None = None
    ) -> Response:
        return await self.call(
            "POST",
            f"/api/v1/chats/{chat_id}/messages",
            who.token,
            json={"client_msg_id": cmid or uuid.uuid4().hex, "text": text},
        )

    async def history(self, who: Account, chat_id: str, **params: Any) -> list[dict[str, Any]]:
        r = await self.call("GET", f"/api/v1/chats/{chat_id}/messages", who.token, params=params)
        assert r.status == 200, r
        return list(r.body["items"])

    async def ws(self, who: Account, device: str = "d1", base: str | None = None) -> WsClient:
        ws = await WsClient.connect(self.http, base or self.base, who.token, device)
        self.sockets.append(ws)
        return ws


@dataclass
class WsClient:
    """A WebSocket whose frames are collected by a reader task. `next(kind)` waits for the next
    frame of that kind; each kind has its own cursor, so waiting for one kind loses no other."""

    ws: aiohttp.ClientWebSocketResponse
    seen: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    ready: dict[str, Any] = field(default_factory=dict)
    _cursors: dict[str | None, int] = field(default_factory=dict)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def connect(
        cls, http: aiohttp.ClientSession, base: str, token: str, device: str
    ) -> WsClient:
        ws = await http.ws_connect(
            f"{base}/api/v1/ws?device_id={device}",
            headers={"Authorization": f"Bearer {token}"},
            heartbeat=None,
        )
        client = cls(ws)
        client.reader = asyncio.create_task(client._read())
        client.ready = await client.next("ready")
        return client

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self.seen.append(msg.json())
                    self._arrived.set()
        finally:
            self.closed.set()
            self._arrived.set()

    async def next(
        self,
        kind: str | None = None,
        timeout: float = 10.0,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The next frame of `kind` (and matching `where`), waiting at most `timeout`."""
        async with asyncio.timeout(timeout):
            while True:
                index = self._cursors.get(kind, 0)
                while index < len(self.seen):
                    frame = self.seen[index]
                    index += 1
                    if (kind is None or frame["type"] == kind) and (where is None or where(frame)):
                        self._cursors[kind] = index
                        return frame
                self._cursors[kind] = index
                if self.closed.is_set():
                    raise ConnectionError(f"socket closed while waiting for {kind}")
                self._arrived.clear()
                await self._arrived.wait()

    async def messages(
        self, count: int, chat_id: str | None = None, timeout: float = 15.0
    ) -> list[dict[str, Any]]:
        """The next `count` message payloads (of `chat_id` if given)."""
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                frame = await self.next("message", timeout=timeout)
                if chat_id is None or frame["message"]["chat_id"] == chat_id:
                    out.append(frame["message"])
        return out

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [f for f in self.seen if f["type"] == kind]

    async def quiet(
        self,
        kind: str,
        within: float = 0.5,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Assert no frame of `kind` (matching `where`) arrives within `within` seconds."""
        with contextlib.suppress(TimeoutError):
            frame = await self.next(kind, timeout=within, where=where)
            raise AssertionError(f"unexpected {kind} frame: {frame}")

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_json(frame)

    async def send_message(self, chat_id: str, text: str, cmid: str | None = None) -> str:
        cmid = cmid or uuid.uuid4().hex
        await self.send({"type": "send", "chat_id": chat_id, "client_msg_id": cmid, "text": text})
        return cmid

    async def ack(self, chat_id: str, seq: int) -> None:
        await self.send({"type": "ack", "chat_id": chat_id, "seq": seq})

    async def close(self) -> None:
        if not self.ws.closed:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


class NodeProcess:
    """`python -m node serve` as its own process group, with its log kept for failures."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.port = int(env["MESSENGER_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NodeProcess:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node", "serve"],
            env={**os.environ, **self.env},
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(
                        f"node exited {self.process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with http.get(self.url + "/healthz") as r:
                        if r.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise AssertionError(f"node not healthy in {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)  # polling another process: there is no event to await

    def signal_group(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM to the node's process group; its exit code."""
        self.signal_group(signal.SIGTERM)
        return await self.wait(timeout)

    async def kill(self) -> None:
        self.signal_group(signal.SIGKILL)
        await self.wait(10)

    async def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = await asyncio.to_thread(self.process.wait, timeout)
        return code

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.signal_group(signal.SIGKILL)
            self.process.wait(10)
