"""`python -m node chat`: a small terminal client, for the README's tour.

Logs in (registering first if the account does not exist), opens the direct chat with `--to`,
prints the last messages, then prints live messages and sends each line typed. It acks what it
shows, like any client: a restart of the client shows only what it has not seen.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import aiohttp


class ChatClient:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self._http = http
        self._base = base.rstrip("/") + "/api/v1"
        self.token = ""

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self._http.request(method, self._base + path, headers=headers, **kwargs) as r:
            body = await r.json(content_type=None) if r.status != 204 else None
            return r.status, body

    async def sign_in(self, username: str, password: str) -> None:
        creds = {"username": username, "password": password}
        status, body = await self.call("POST", "/auth/login", json=creds)
        if status == 401:
            status, body = await self.call("POST", "/auth/register", json=creds)
            if status != 201:
                raise SystemExit(f"cannot register {username}: {body}")
            status, body = await self.call("POST", "/auth/login", json=creds)
        if status != 200:
            raise SystemExit(f"cannot log in: {body}")
        self.token = body["access_token"]


async def run_chat(base: str, username: str, password: str, peer: str, device: str) -> int:
    async with aiohttp.ClientSession() as http:
        client = ChatClient(http, base)
        await client.sign_in(username, password)
        _, me = await client.call("GET", "/users/me")
        match = await _find_user(client, peer)
        names = {me["id"]: username, match[0]["id"]: match[0]["username"]}
        status, chat = await client.call(
            "POST", "/chats", json={"kind": "direct", "user_id": match[0]["id"]}
        )
        if status not in (200, 201):
            print(f"cannot open the chat: {chat}", file=sys.stderr)
            return 1
        print(
            f"chatting with {names[match[0]['id']]} (chat {chat['id']}); "
            "type and press Enter, Ctrl-D quits"
        )
        ws_url = base.rstrip("/") + f"/api/v1/ws?device_id={device}"
        async with http.ws_connect(
            ws_url, headers={"Authorization": f"Bearer {client.token}"}
        ) as ws:
            reader = asyncio.create_task(_show(ws, names, chat["id"]))
            try:
                await _type(ws, chat["id"])
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
    return 0


async def _find_user(client: ChatClient, username: str) -> list[dict[str, Any]]:
    """The user named `username`, waiting (politely) until they have signed up."""
    told = False
    while True:
        _, found = await client.call("GET", "/users", params={"q": username, "limit": "20"})
        match = [u for u in found["items"] if u["username"].lower() == username.lower()]
        if match:
            return match
        if not told:
            print(f"waiting for {username} to sign up (run the same command as {username})...")
            told = True
        await asyncio.sleep(1.0)


async def _show(ws: aiohttp.ClientWebSocketResponse, names: dict[str, str], chat_id: str) -> None:
    async for msg in ws:
        if msg.type != aiohttp.WSMsgType.TEXT:
            break
        frame = msg.json()
        kind = frame["type"]
        if kind == "message" and frame["message"]["chat_id"] == chat_id:
            m = frame["message"]
            print(
                f"[{m['seq']}] {names.get(m['sender_id'], m['sender_id'])}: {m['text']}", flush=True
            )
            await ws.send_json({"type": "ack", "chat_id": chat_id, "seq": m["seq"]})
        elif kind == "presence":
            state = "online" if frame["online"] else "offline"
            print(f"* {names.get(frame['user_id'], frame['user_id'])} is {state}", flush=True)
        elif kind == "error":
            print(f"! {frame['code']}: {frame['message']}", flush=True)


async def _type(ws: aiohttp.ClientWebSocketResponse, chat_id: str) -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if text := line.rstrip("\n"):
            await ws.send_json(
                {
                    "type": "send",
                    "chat_id": chat_id,
                    "client_msg_id": uuid.uuid4().hex,
                    "text": text,
                }
            )
