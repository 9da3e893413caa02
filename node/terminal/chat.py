"""`python -m node chat`: a small terminal client, for the README's tour.

Signs in (registering the account first if it does not exist), opens the direct chat with
`--to` (waiting for that user to sign up), prints the chat's recent history, then live messages,
and sends each line typed. It acks what it shows, like any client: messages already shown are
not shown again, on this run or the next.

The node may come and go: a client started before its node, or whose node stops, says so once,
retries with exponential back-off (0.5 s doubling to 10 s), and says when it has the node again.
A network failure is never a traceback. A line typed while the node is away is sent once it is
back; a line whose confirmation was lost is sent again with the same `client_msg_id`, so it is
never stored twice. Only a refusal that retrying cannot change (a wrong password) ends it, with
exit code 1. Ctrl-D quits (after waiting briefly for unconfirmed lines), as does Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

HISTORY = 20  # messages shown on start
FIRST_RETRY, MAX_RETRY = 0.5, 10.0
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=10)
QUIT_GRACE = 3.0  # how long Ctrl-D waits for unconfirmed lines


class Transient(Exception):
    """The node is away or cannot serve right now: retry."""


class Refused(Exception):
    """The node said no in a way retrying cannot change."""


def say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Conversation:
    """What survives reconnects: who we are, the chat, what was shown and what awaits `sent`."""

    username: str
    password: str
    peer_name: str
    device: str
    token: str = ""
    chat_id: str = ""
    names: dict[str, str] = field(default_factory=dict)
    shown: int = 0  # highest seq printed
    connected_once: bool = False
    away: bool = False  # told the person the node is away, not yet that it is back
    pending: dict[str, str] = field(default_factory=dict)  # client_msg_id -> text, typing order
    confirmed: asyncio.Event = field(default_factory=asyncio.Event)


class Rest:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self._http = http
        self._base = base.rstrip("/") + "/api/v1"

    async def call(self, method: str, path: str, token: str = "", **kw: Any) -> tuple[int, Any]:
        """(status, body) of a 2xx or 4xx answer; Transient for network failures and 5xx."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with self._http.request(
                method, self._base + path, headers=headers, timeout=REQUEST_TIMEOUT, **kw
            ) as r:
                body = await r.json(content_type=None) if r.status != 204 else None
                status = r.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Transient(_reason(exc)) from None
        except ValueError:
            raise Transient("the node answered something that is not JSON") from None
        if status >= 500 or status == 429:
            raise Transient(f"the node answered {status}")
        return status, body


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or "cannot connect"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


async def run_chat(base: str, username: str, password: str, peer: str, device: str) -> int:
    conv = Conversation(username, password, peer, device)
    lines = _stdin_lines()
    attempt = 0
    async with aiohttp.ClientSession() as http:
        rest = Rest(http, base)
        while True:
            try:
                await _converse(conv, rest, http, base, lines)
                return 0
            except Refused as exc:
                print(f"! {exc}", file=sys.stderr, flush=True)
                return 1
            except Transient as exc:
                if not conv.away:
                    what = "lost the node" if conv.connected_once else "waiting for the node"
                    say(f"* {what} at {base} ({exc}); retrying, Ctrl-C quits")
                    conv.away, attempt = True, 0
                delay = min(MAX_RETRY, FIRST_RETRY * 2**attempt) * random.uniform(0.8, 1.2)
                attempt += 1
                await asyncio.sleep(delay)


async def _converse(
    conv: Conversation,
    rest: Rest,
    http: aiohttp.ClientSession,
    base: str,
    lines: asyncio.Queue[str | None],
) -> None:
    """One connection, from sign-in to its end: returns on Ctrl-D, raises Transient when the
    node goes away."""
    await _sign_in(conv, rest)
    if not conv.chat_id:
        await _open_chat(conv, rest)
        await _show_history(conv, rest)
    url = base.rstrip("/") + f"/api/v1/ws?device_id={conv.device}"
    try:
        ws = await http.ws_connect(
            url, headers={"Authorization": f"Bearer {conv.token}"}, heartbeat=15
        )
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        raise Transient(_reason(exc)) from None
    async with ws:
        if conv.away:
            again = " again" if conv.connected_once else ""
            say(f"* connected to the node at {base}{again}")
        conv.away, conv.connected_once = False, True
        try:
            if conv.shown:
                await ws.send_json({"type": "ack", "chat_id": conv.chat_id, "seq": conv.shown})
            for cmid, text in list(conv.pending.items()):
                await _send(ws, conv, cmid, text)
        except (aiohttp.ClientError, OSError) as exc:
            raise Transient(_reason(exc)) from None
        reader = asyncio.create_task(_show(ws, conv))
        writer = asyncio.create_task(_type(ws, conv, lines))
        done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        for task in (reader, writer):
            task.cancel()
        await asyncio.gather(reader, writer, return_exceptions=True)
        if writer in done and not writer.cancelled() and writer.exception() is None:
            return  # Ctrl-D
        error = writer.exception() if writer in done and not writer.cancelled() else None
        raise Transient(_reason(error) if error else "the connection closed")


async def _sign_in(conv: Conversation, rest: Rest) -> None:
    creds = {"username": conv.username, "password": conv.password}
    status, body = await rest.call("POST", "/auth/login", json=creds)
    if status == 401:
        status, body = await rest.call("POST", "/auth/register", json=creds)
        if status not in (201, 409):  # 409: it exists after all (a wrong password, then)
            raise Refused(f"cannot sign up {conv.username}: {_message(body)}")
        status, body = await rest.call("POST", "/auth/login", json=creds)
    if status != 200:
        raise Refused(f"cannot log in as {conv.username}: {_message(body)}")
    conv.token = body["access_token"]


async def _open_chat(conv: Conversation, rest: Rest) -> None:
    _, me = await rest.call("GET", "/users/me", conv.token)
    told = False
    while True:
        status, found = await rest.call(
            "GET", "/users", conv.token, params={"q": conv.peer_name, "limit": "20"}
        )
        match = [u for u in found["items"] if u["username"].lower() == conv.peer_name.lower()]
        if match:
            break
        if not told:
            say(f"* waiting for {conv.peer_name} to sign up (run the same command as them)")
            told = True
        await asyncio.sleep(1.0)  # another person signing up: nothing to await
    peer = match[0]
    status, chat = await rest.call(
        "POST", "/chats", conv.token, json={"kind": "direct", "user_id": peer["id"]}
    )
    if status not in (200, 201):
        raise Refused(f"cannot open the chat with {peer['username']}: {_message(chat)}")
    conv.chat_id = chat["id"]
    conv.names = {me["id"]: me["username"], peer["id"]: peer["username"]}
    say(f"chatting with {peer['username']} (chat {chat['id']}); type and press Enter, Ctrl-D quits")


async def _show_history(conv: Conversation, rest: Rest) -> None:
    status, page = await rest.call(
        "GET", f"/chats/{conv.chat_id}/messages", conv.token, params={"limit": str(HISTORY)}
    )
    if status == 200:
        for message in page["items"]:
            _print_message(conv, message)


def _print_message(conv: Conversation, m: dict[str, Any]) -> None:
    if m["seq"] > conv.shown:
        say(f"[{m['seq']}] {conv.names.get(m['sender_id'], m['sender_id'])}: {m['text']}")
        conv.shown = m["seq"]


async def _show(ws: aiohttp.ClientWebSocketResponse, conv: Conversation) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = msg.json()
        kind = frame["type"]
        if kind == "message" and frame["message"]["chat_id"] == conv.chat_id:
            _print_message(conv, frame["message"])
            await ws.send_json({"type": "ack", "chat_id": conv.chat_id, "seq": conv.shown})
        elif kind == "sent":
            conv.pending.pop(frame["client_msg_id"], None)
            conv.confirmed.set()
        elif kind == "presence":
            for entry in frame.get("users", [frame]):
                state = "online" if entry["online"] else "offline"
                say(f"* {conv.names.get(entry['user_id'], entry['user_id'])} is {state}")
        elif kind == "error":
            if frame.get("ref") in conv.pending and frame["code"] != "unavailable":
                conv.pending.pop(frame["ref"])  # refused for good: do not send it again
                conv.confirmed.set()
            say(f"! {frame['code']}: {frame['message']}")


async def _type(
    ws: aiohttp.ClientWebSocketResponse, conv: Conversation, lines: asyncio.Queue[str | None]
) -> None:
    while (line := await lines.get()) is not None:
        if text := line.rstrip("\n"):
            cmid = uuid.uuid4().hex
            conv.pending[cmid] = text
            await _send(ws, conv, cmid, text)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(QUIT_GRACE):  # Ctrl-D: let what was typed be confirmed
            while conv.pending:
                conv.confirmed.clear()
                await conv.confirmed.wait()


async def _send(
    ws: aiohttp.ClientWebSocketResponse, conv: Conversation, cmid: str, text: str
) -> None:
    frame = {"type": "send", "chat_id": conv.chat_id, "client_msg_id": cmid, "text": text}
    await ws.send_json(frame)


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Lines typed, then None at end of input, read by a daemon thread (it never holds up the
    exit, unlike an executor thread blocked in readline)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


def _message(body: Any) -> str:
    try:
        return str(body["error"]["message"])
    except (KeyError, TypeError):
        return str(body)
