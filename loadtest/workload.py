"""The client side of the 'pairs' workload: one load-generator worker process.

A worker owns whole pairs (pair i belongs to worker i % K). For each pair it registers a sender
and a receiver over REST, the sender opens a direct chat with the receiver, both open a WebSocket
(receivers first, on the receiving node), then it waits for the parent's start time t0 and sends:

* rate R > 0 (aggregate, open loop): message j of pair i is global message k = j*P + i, due at
  t0 + k/R whether or not earlier ones were answered; R = 0: each sender back to back.
* every `send` frame has client_msg_id `<tag>-<i>-<j>` and text `"<i> <j> <ts>"`, ts being
  time.perf_counter_ns() at the send (CLOCK_MONOTONIC: one clock for all processes on a machine).

Every connection acks like a client: the highest seq per chat, coalesced every ~20 ms. A `message`
whose seq this connection saw already is a duplicate; a `sent` frame confirms a send; an `error`
frame with a `ref` is a refused send. After the last send the worker drains: it waits until every
sent message was delivered and confirmed, or until nothing arrived for `drain_timeout` seconds.
Lost = confirmed by `sent` but never delivered to the receiver.

Mode "echo" speaks the relay protocol of loadtest/echo.py instead: the sender builds the whole
node-shaped `message` frame, the relay forwards it verbatim (and echoes it back as confirmation),
so the receiving path (JSON decode, dup check, acks) is the same code as against the node.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from loadtest.client import ACK_DELAY, Sessions, api, now_ns, signup
from loadtest.harness import Phase


@dataclass
class Spec:
    """What a worker needs; picklable (workers are spawned)."""

    mode: str  # "node" | "echo"
    send_url: str  # senders connect here (and REST setup goes here)
    recv_url: str  # receivers connect here (== send_url for 'single')
    pairs: list[int]  # the global pair indices this worker owns
    total_pairs: int
    messages: int
    rate: float
    tag: str
    drain_timeout: float = 5.0
    max_time: float = 300.0
    settle: float = 0.5
    setup_concurrency: int = 16
    connect_concurrency: int = 32
    source_addrs: list[str] = field(default_factory=list)  # loopback sources for the sockets


class Counters:
    def __init__(self) -> None:
        self.sent = self.confirmed = self.delivered = self.dup = self.out_of_order = 0
        self.misrouted = self.send_errors = self.other_errors = self.dropped = 0
        self.first_send = self.last_send = self.last_recv = self.max_lag = 0  # ns
        self.error_codes: dict[str, int] = {}
        self.first_error = ""


class Worker:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.local = {i: n for n, i in enumerate(spec.pairs)}  # global pair -> local index
        size = len(spec.pairs) * spec.messages
        self.confirmed = bytearray(size)
        self.delivered = bytearray(size)
        self.lat = array("q")
        self.lat_first = array("q")  # the first message of its chat (j = 0): a cold chat
        self.lat_warm = array("q")  # every later one
        self.c = Counters()
        self.progress = asyncio.Event()
        self.ids: dict[str, str] = {}
        self.tokens: dict[str, str] = {}
        self.chats: dict[int, str] = {}
        self.conns: list[Conn] = []
        self.sessions = Sessions(spec.source_addrs)
        self.http = self.sessions.rest

    def name(self, i: int, role: str) -> str:
        return f"b{self.spec.tag}{role}{i}"

    # ---------------------------------------------------------------- events from connections
    def on_confirm(self, cmid: str) -> None:
        _, i, j = cmid.rsplit("-", 2)
        k = self.local[int(i)] * self.spec.messages + int(j)
        if not self.confirmed[k]:
            self.confirmed[k] = 1
            self.c.confirmed += 1
            self.progress.set()

    def on_deliver(self, pair: int, j: int, ts: int, now: int) -> None:
        k = self.local[pair] * self.spec.messages + j
        if self.delivered[k]:  # same message under another seq: also a duplicate
            self.c.dup += 1
            return
        self.delivered[k] = 1
        self.c.delivered += 1
        self.c.last_recv = now
        self.lat.append(now - ts)
        (self.lat_warm if j else self.lat_first).append(now - ts)
        self.progress.set()

    def on_error(self, frame: dict[str, Any]) -> None:
        code = str(frame.get("code"))
        self.c.error_codes[code] = self.c.error_codes.get(code, 0) + 1
        if not self.c.first_error:
            self.c.first_error = str(frame)[:300]
        if frame.get("ref"):
            self.c.send_errors += 1
            self.progress.set()
        else:
            self.c.other_errors += 1

    # ---------------------------------------------------------------- setup over REST
    async def signup(self, user: str) -> None:
        assert self.http is not None
        self.ids[user], self.tokens[user] = await signup(self.http, self.spec.send_url, user)

    async def setup(self) -> None:
        sem = asyncio.Semaphore(self.spec.setup_concurrency)

        async def pair(i: int) -> None:
            s, r = self.name(i, "s"), self.name(i, "r")
            if self.spec.mode == "echo":
                self.ids.update({s: s, r: r})
                self.chats[i] = f"c{i}"
                return
            assert self.http is not None
            async with sem:
                await self.signup(s)
                await self.signup(r)
                js = await api(
                    self.http,
                    self.spec.send_url,
                    "POST",
                    "/chats",
                    self.tokens[s],
                    json={"kind": "direct", "user_id": self.ids[r]},
                )
                self.chats[i] = str(js["id"])

        await asyncio.gather(*(pair(i) for i in self.spec.pairs))

    async def connect(self) -> None:
        sem = asyncio.Semaphore(self.spec.connect_concurrency)

        async def one(i: int, role: str) -> Conn:
            user = self.name(i, role)
            base = self.spec.recv_url if role == "r" else self.spec.send_url
            http = self.sessions.pick(2 * i + (role == "r"))
            async with sem:
                if self.spec.mode == "echo":
                    ws = await http.ws_connect(f"{base}/ws?name={user}", max_msg_size=0)
                else:
                    ws = await http.ws_connect(
                        f"{base}/api/v1/ws?device_id=bench",
                        max_msg_size=0,
                        heartbeat=None,
                        headers={"Authorization": f"Bearer {self.tokens[user]}"},
                    )
                first = await ws.receive(timeout=30)
            if (
                first.type != aiohttp.WSMsgType.TEXT
                or orjson.loads(first.data).get("type") != "ready"
            ):
                raise RuntimeError(f"{user}: expected a ready frame, got {first.data!r:.200}")
            conn = Conn(self, ws, i, self.ids[user], role == "r")
            self.conns.append(conn)
            return conn

        self.receivers = await asyncio.gather(*(one(i, "r") for i in self.spec.pairs))
        senders = await asyncio.gather(*(one(i, "s") for i in self.spec.pairs))
        self.senders = dict(zip(self.spec.pairs, senders, strict=True))

    # ---------------------------------------------------------------- measured phase
    async def send(self, i: int, j: int) -> None:
        ts = now_ns()
        try:
            await self.senders[i].send(j, ts)
            self.c.sent += 1
            self.c.last_send = now_ns()
            if not self.c.first_send:
                self.c.first_send = ts
        except Exception as e:  # count and keep going
            self.c.send_errors += 1
            self.c.first_error = self.c.first_error or repr(e)[:300]

    async def run_sends(self, t0: int) -> None:
        sp = self.spec
        if sp.rate <= 0:

            async def sender(i: int) -> None:
                for j in range(sp.messages):
                    await self.send(i, j)

            await asyncio.gather(*(sender(i) for i in sp.pairs))
            return
        ns_per = 1e9 / sp.rate
        order = sorted(sp.pairs)
        for j in range(sp.messages):  # increasing k = j*P + i: the global schedule, our share
            for i in order:
                due = t0 + int((j * sp.total_pairs + i) * ns_per)
                d = due - now_ns()
                if d > 0:
                    await asyncio.sleep(d / 1e9)
                elif -d > self.c.max_lag:
                    self.c.max_lag = -d
                await self.send(i, j)

    async def drain(self) -> bool:
        """True when everything sent was delivered and answered; False after a quiet timeout."""
        c = self.c
        while c.delivered + c.send_errors < c.sent or c.confirmed + c.send_errors < c.sent:
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.spec.drain_timeout)
            except TimeoutError:
                return False
        return True

    def result(self, timed_out: bool, cpu: float) -> dict[str, Any]:
        lost = sum(1 for k, v in enumerate(self.confirmed) if v and not self.delivered[k])
        out = dict(vars(self.c))
        out.update(
            lost=lost,
            unconfirmed=self.c.sent - self.c.confirmed - self.c.send_errors,
            lat=self.lat,
            lat_first=self.lat_first,
            lat_warm=self.lat_warm,
            cpu=cpu,
            timed_out=timed_out,
            pairs=len(self.spec.pairs),
        )
        return out

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.conns), return_exceptions=True)
        await self.sessions.close()


class Conn:
    """One WebSocket: reads frames, checks seq per chat, acks, and sends for its pair."""

    def __init__(
        self, w: Worker, ws: aiohttp.ClientWebSocketResponse, pair: int, me: str, receiver: bool
    ) -> None:
        self.w, self.ws, self.pair, self.me, self.receiver = w, ws, pair, me, receiver
        self.echo = w.spec.mode == "echo"
        self.chat = w.chats[pair]
        self.peer = w.name(pair, "r")
        self.seen: dict[str, bytearray] = {}
        self.last: dict[str, int] = {}
        self.pending_ack: dict[str, int] = {}
        self.acks: set[asyncio.Future[None]] = set()
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self.reader = asyncio.ensure_future(self.read())

    async def read(self) -> None:
        w = self.w
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            f = orjson.loads(msg.data)
            kind = f.get("type")
            if kind == "message":
                self.on_message(f["message"])
            elif kind == "sent":
                w.on_confirm(f["client_msg_id"])
            elif kind == "error":
                w.on_error(f)
        if not self.closing:
            w.c.dropped += 1

    def on_message(self, m: dict[str, Any]) -> None:
        now = now_ns()
        chat, seq = m["chat_id"], m["seq"]
        seen = self.seen.get(chat)
        if seen is None:
            seen = self.seen[chat] = bytearray(max(64, self.w.spec.messages + 1))
        if seq >= len(seen):
            seen.extend(bytearray(seq + 1 - len(seen)))
        if seen[seq]:
            self.w.c.dup += 1
            return
        seen[seq] = 1
        if seq < self.last.get(chat, 0):
            self.w.c.out_of_order += 1
        else:
            self.last[chat] = seq
        if chat not in self.pending_ack:  # (the echo relay drops acks; they cost the client alike)
            self.loop.call_later(ACK_DELAY, self.ack, chat)
        self.pending_ack[chat] = max(self.pending_ack.get(chat, 0), seq)
        if str(m["sender_id"]) == self.me:  # our own message (the sending device gets it too)
            if self.echo:
                self.w.on_confirm(m["client_msg_id"])
            return
        pair, j, ts = (int(x) for x in m["text"].split())
        if pair != self.pair or not self.receiver:
            self.w.c.misrouted += 1
            return
        self.w.on_deliver(pair, j, ts, now)

    def ack(self, chat: str) -> None:
        seq = self.pending_ack.pop(chat, None)
        if seq is not None and not self.ws.closed and not self.closing:
            frame = orjson.dumps({"type": "ack", "chat_id": chat, "seq": seq}).decode()
            task = asyncio.ensure_future(self.ws.send_str(frame))
            self.acks.add(task)
            task.add_done_callback(self.acks.discard)

    async def send(self, j: int, ts: int) -> None:
        cmid = f"{self.w.spec.tag}-{self.pair}-{j}"
        text = f"{self.pair} {j} {ts}"
        if self.echo:
            frame = orjson.dumps(
                {
                    "type": "message",
                    "message": {
                        "id": cmid,
                        "chat_id": self.chat,
                        "seq": j + 1,
                        "sender_id": self.me,
                        "client_msg_id": cmid,
                        "text": text,
                        "attachments": [],
                        "created_at": "1970-01-01T00:00:00Z",
                    },
                }
            ).decode()
            await self.ws.send_str(f"{self.peer}\n{frame}")
        else:
            await self.ws.send_str(
                orjson.dumps(
                    {"type": "send", "chat_id": self.chat, "client_msg_id": cmid, "text": text}
                ).decode()
            )

    async def close(self) -> None:
        self.closing = True
        await asyncio.gather(*self.acks, return_exceptions=True)
        self.reader.cancel()
        await self.ws.close()


async def worker_main(spec: Spec, phase: Phase) -> None:
    """Phases: "setup" (REST done) → "ready" (sockets open, settled) → t0 → "done"."""
    w = Worker(spec)
    try:
        t_setup = now_ns()
        async with asyncio.timeout(spec.max_time):
            await w.setup()
        await phase.step("setup", {"setup_s": (now_ns() - t_setup) / 1e9})
        t_connect = now_ns()
        async with asyncio.timeout(spec.max_time):
            await w.connect()
        connect_s = (now_ns() - t_connect) / 1e9
        await asyncio.sleep(spec.settle)
        t0 = await phase.step("ready", {"connect_s": connect_s})
        await asyncio.sleep(max(0, t0 - now_ns()) / 1e9)
        cpu0 = time.process_time()
        timed_out = False
        try:
            async with asyncio.timeout(spec.max_time):
                await w.run_sends(t0)
                drained = await w.drain()
        except TimeoutError:
            timed_out, drained = True, False
        res = w.result(timed_out, time.process_time() - cpu0)
        res["drained"] = drained
        await phase.step("done", res)  # the parent has read the server counters
    finally:
        await asyncio.wait_for(w.close(), 30)
