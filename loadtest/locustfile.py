"""A realistic messenger user for Locust: REST for the account, chats and history, one WebSocket
for live traffic.

Each user registers a fresh account, logs in, gets a direct chat with a peer (users pair up
through an in-process registry: a new user takes a partner who is still waiting for one, or else
opens a chat with a random earlier user and waits to be taken), sometimes creates or is added to
a small group, then opens `/api/v1/ws?device_id=locust` with a reader greenlet.

Rows reported besides the REST requests (see loadtest/LOCUST.md):
  WS connect  time from opening the socket to its `ready` frame
  WS send     time from a `send` frame to its `sent` frame (error frames naming it: failures)
  WS deliver  end-to-end latency of a message from someone else: now minus the send timestamp
              embedded in its text (one machine's clock; texts without one are not timed)
  WS error    `error` frames not tied to a send;  WS disconnect  the socket closed under us

Run: locust -f loadtest/locustfile.py --host http://127.0.0.1:8080
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import time
import uuid
from typing import Any

import gevent  # type: ignore[import-untyped]
import websocket
from gevent.lock import BoundedSemaphore  # type: ignore[import-untyped]
from locust import FastHttpUser, between, task
from locust.exception import RescheduleTask, StopUser

PASSWORD = "locust-password"
DEVICE = "locust"
SEND_TIMEOUT = 30.0  # a send without `sent` after this long is a failure
GROUP_MAX = 20  # members per group, so fan-out stays bounded as users grow
STAMP = re.compile(r"^t=(\d+\.\d+) ")
FILLER = "the quick brown fox jumps over the lazy dog ".split()

# In-process registry (one per Locust process): users still waiting for a partner, everyone
# alive, and the groups. Greenlets switch only on I/O, so these are updated without locks.
waiting: list[MessengerUser] = []
alive: list[MessengerUser] = []
groups: list[dict[str, Any]] = []  # {"id", "owner": MessengerUser, "size"}
arrivals = itertools.count()


NODES = [u.rstrip("/") for u in os.environ.get("MESSENGER_LOCUST_NODES", "").split(",") if u]
_node_turn = itertools.count()


class WsError(Exception):
    """An `error` frame or a lost socket, as Locust's failure reason."""


class MessengerUser(FastHttpUser):
    wait_time = between(0.5, 2.0)

    def ws_base(self) -> str:
        """Where this user's WebSocket goes: `--host`, or with MESSENGER_LOCUST_NODES (comma-
        separated node URLs, e.g. a local cluster's) one of them per user, round robin, so that
        deliveries cross nodes."""
        if not NODES:
            return str(self.host).rstrip("/")
        if not hasattr(self, "_node"):
            self._node = NODES[next(_node_turn) % len(NODES)]
        return self._node

    def on_start(self) -> None:
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.stopping = False
        self.chats: set[str] = set()
        self.pending: dict[str, tuple[float, dict[str, Any]]] = {}  # cmid -> (sent at, frame)
        self.last_seq: dict[str, int] = {}  # highest seq seen per chat (drops redeliveries)
        self.unacked: dict[str, int] = {}  # coalesced: the newest seq to ack per chat
        self.username = f"lc_{uuid.uuid4().hex[:16]}"
        self.token_lock = BoundedSemaphore()  # a group owner's token is shared
        creds = {"username": self.username, "password": PASSWORD}
        try:
            self.user_id = str(self.call("POST", "/api/v1/auth/register", json=creds)["user"]["id"])
            self.store_tokens(self.call("POST", "/api/v1/auth/login", json=creds))
            self.pair_up()
            alive.append(self)
            self.join_groups(next(arrivals))
            if self.connect() is None:
                raise StopUser()
        except RescheduleTask:
            raise StopUser() from None  # a user that could not be set up leaves (reported)

    def on_stop(self) -> None:
        self.stopping = True
        for registry in (waiting, alive):
            if self in registry:
                registry.remove(self)
        reader, ws = getattr(self, "reader", None), getattr(self, "ws", None)
        if reader is not None:
            reader.kill()
        if ws is not None:
            try:
                ws.close(timeout=1)
            except (OSError, websocket.WebSocketException):
                pass

    # --- REST ---------------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        """The bearer header, refreshed a minute before expiry (under a lock: a refresh token is
        single-use, and a group owner's header is also taken by the users it adds)."""
        with self.token_lock:
            if time.monotonic() > self.token_expiry:
                body = {"refresh_token": self.refresh_token}
                self.store_tokens(self.call("POST", "/api/v1/auth/refresh", json=body))
        return {"Authorization": f"Bearer {self.access_token}"}

    def store_tokens(self, tokens: dict[str, Any]) -> None:
        self.access_token, self.refresh_token = tokens["access_token"], tokens["refresh_token"]
        self.token_expiry = time.monotonic() + max(float(tokens["expires_in"]) - 60, 5)

    def call(self, method: str, path: str, name: str = "", auth: bool = False, **kw: Any) -> Any:
        """One request's JSON body; an HTTP failure (reported by Locust) ends the task."""
        if auth:
            kw.setdefault("headers", self.headers())
        response = self.client.request(method, path, name=name or path, **kw)
        if not 200 <= response.status_code < 300:  # a connection error is status 0
            raise RescheduleTask()
        return response.json() if response.text else None

    def open_chat(self, body: dict[str, Any], name: str) -> str:
        chat_id = str(self.call("POST", "/api/v1/chats", name=name, auth=True, json=body)["id"])
        self.chats.add(chat_id)
        return chat_id

    def pair_up(self) -> None:
        """Take a waiting partner; else chat with a random earlier user and wait to be taken."""
        partner = waiting.pop(0) if waiting else None
        if partner is None:
            waiting.append(self)
            partner = random.choice(alive) if alive else None
        if partner is not None:
            body = {"kind": "direct", "user_id": partner.user_id}
            self.open_chat(body, "/api/v1/chats (direct)")

    def join_groups(self, arrival: int) -> None:
        """Every tenth user founds a group with up to three others; about half of the rest are
        added to one or two groups by the group's owner."""
        if arrival % 10 == 0:
            others = [u for u in alive if u is not self]
            members = [u.user_id for u in random.sample(others, min(3, len(others)))]
            chat_id = self.open_chat(
                {"kind": "group", "title": f"group of {self.username}", "member_ids": members},
                "/api/v1/chats (group)",
            )
            groups.append({"id": chat_id, "owner": self, "size": 1 + len(members)})
        elif random.random() < 0.5:
            for group in random.sample(groups, min(2, len(groups))):
                if group["size"] >= GROUP_MAX or group["owner"].stopping:
                    continue
                self.call(  # as the owner: only the owner adds members
                    "POST",
                    f"/api/v1/chats/{group['id']}/members",
                    name="/api/v1/chats/[id]/members",
                    headers=group["owner"].headers(),
                    json={"user_id": self.user_id},
                )
                group["size"] += 1
                self.chats.add(group["id"])

    # --- WebSocket ----------------------------------------------------------------------------

    def connect(self) -> websocket.WebSocket | None:
        """Open the socket and wait for `ready`; then a reader greenlet takes every frame.
        Unconfirmed sends go again with the same client_msg_id: the node stores each once."""
        url = re.sub(r"^http", "ws", self.ws_base()) + f"/api/v1/ws?device_id={DEVICE}"
        start = time.perf_counter()
        try:
            auth = self.headers()["Authorization"]
            ws = websocket.create_connection(url, header=[f"Authorization: {auth}"], timeout=30)
            ready = json.loads(ws.recv())
            if ready.get("type") != "ready":
                raise WsError(f"first frame is {ready.get('type')}, not ready")
            for _, frame in list(self.pending.values()):
                ws.send(json.dumps(frame))
        except (OSError, websocket.WebSocketException, WsError, ValueError) as exc:
            self.report("WS connect", start, 0, exc)
            return None
        ws.settimeout(None)  # the reader blocks until a frame comes; the node pings idle sockets
        self.report("WS connect", start, 0)
        self.ws, self.reader = ws, gevent.spawn(self.read, ws)
        return ws

    def read(self, ws: websocket.WebSocket) -> None:
        try:
            while True:
                raw = ws.recv()
                if raw:
                    self.on_frame(json.loads(raw), len(raw))
        except (OSError, websocket.WebSocketException, ValueError) as exc:
            if not self.stopping:
                self.fire("WS disconnect", 0, 0, WsError(f"socket lost: {exc!r}"))
        finally:
            if self.ws is ws:
                self.ws = None

    def on_frame(self, frame: dict[str, Any], size: int) -> None:
        kind = frame.get("type")
        if kind == "sent":
            pending = self.pending.pop(frame["client_msg_id"], None)
            if pending is not None:
                self.report("WS send", pending[0], size)
        elif kind == "message":
            msg = frame["message"]
            chat_id, seq = str(msg["chat_id"]), int(msg["seq"])
            if seq <= self.last_seq.get(chat_id, 0):  # a redelivery after a reconnect
                self.unacked[chat_id] = self.last_seq[chat_id]  # its ack may have been lost
                return
            self.chats.add(chat_id)
            self.last_seq[chat_id] = self.unacked[chat_id] = seq
            stamp = STAMP.match(msg["text"])
            if str(msg["sender_id"]) != self.user_id and stamp:
                latency_ms = max(0.0, (time.time() - float(stamp.group(1))) * 1000)
                self.fire("WS deliver", latency_ms, size)
        elif kind == "error":
            pending = self.pending.pop(frame.get("ref") or "", None)
            name = "WS send" if pending is not None else "WS error"
            error = WsError(f"{frame.get('code')}: {frame.get('message')}")
            self.report(name, pending[0] if pending else time.perf_counter(), size, error)

    def fire(self, name: str, ms: float, size: int, exc: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=ms,
            response_length=size,
            exception=exc,
            context={},
        )

    def report(self, name: str, start: float, size: int, exc: Exception | None = None) -> None:
        self.fire(name, (time.perf_counter() - start) * 1000, size, exc)

    def send_frame(self, frame: dict[str, Any]) -> None:
        """Send over the socket, reconnecting first if it was lost."""
        ws = self.ws or self.connect()
        if ws is None:
            return
        try:
            ws.send(json.dumps(frame))
        except (OSError, websocket.WebSocketException):
            ws.shutdown()  # type: ignore[no-untyped-call]  # its reader reports the loss
            self.ws = None

    # --- tasks --------------------------------------------------------------------------------

    @task(10)
    def send_message(self) -> None:
        now = time.perf_counter()
        for cmid, (start, _) in list(self.pending.items()):  # sends that never got `sent`
            if now - start > SEND_TIMEOUT:
                del self.pending[cmid]
                self.report("WS send", start, 0, WsError("no sent frame"))
        if not self.chats:
            return
        cmid = uuid.uuid4().hex
        text = f"t={time.time():.6f} " + " ".join(random.choices(FILLER, k=random.randint(2, 30)))
        chat_id = random.choice(tuple(self.chats))
        frame = {"type": "send", "chat_id": chat_id, "client_msg_id": cmid, "text": text}
        self.pending[cmid] = (time.perf_counter(), frame)
        if self.ws is not None:  # else connecting sends it with the rest of the pending ones
            self.send_frame(frame)
        else:
            self.connect()

    @task(5)
    def ack(self) -> None:
        """Ack everything received since the last ack, one frame per chat; mark one chat read."""
        unacked, self.unacked = self.unacked, {}
        for chat_id, seq in unacked.items():
            self.send_frame({"type": "ack", "chat_id": chat_id, "seq": seq})
        if unacked:
            chat_id, seq = random.choice(list(unacked.items()))
            self.send_frame({"type": "read", "chat_id": chat_id, "seq": seq})

    @task(2)
    def list_chats(self) -> None:
        for chat in self.call("GET", "/api/v1/chats", auth=True)["items"]:
            self.chats.add(str(chat["id"]))

    @task(2)
    def read_history(self) -> None:
        if self.chats:
            chat_id = random.choice(tuple(self.chats))
            path, name = f"/api/v1/chats/{chat_id}/messages", "/api/v1/chats/[id]/messages"
            self.call("GET", f"{path}?limit=50", name=name, auth=True)

    @task(1)
    def typing(self) -> None:
        if self.chats:
            self.send_frame({"type": "typing", "chat_id": random.choice(tuple(self.chats))})
