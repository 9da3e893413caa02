"""The 'groups' workload: G group chats of S members each, every member connected, senders posting.

Layout: member m of group g is user `g<g>m<m>`; members 0..senders-1 of a group send. Members are
spread over the K workers by global index (g*S + m) % K, so one big group spans every worker; in
`cross` even members connect to node A and odd ones to node B (senders: A). Setup has phases:
every worker registers its users, the parent merges their ids, the worker owning member 0 creates
the group (`POST /chats` kind group, every member listed), the parent merges the chat ids, all
connect, and the parent gives one start time t0.

Sends follow the pairs schedule: sender s (global index over all groups) sends message j, due at
t0 + (j*senders_total + s)/R (open loop), or back to back when R = 0; text `"<s> <j> <ts>"`.
Every member's socket (the senders' too) dedups by seq and acks like a client. A delivery is a
message reaching a member other than its sender; its latency is the receive time minus ts.

Lost = for each receiving member, the messages of its group confirmed by `sent` minus the unique
ones it received (summed); dup = a seq a connection already had, or the same message under a
second seq.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

from loadtest import profiling, report
from loadtest.client import Sessions, Socket, Stats, create_chat, now_ns, signup_many
from loadtest.harness import Phase, Workers
from loadtest.procstats import cpu_seconds, delta, hwm_bytes, listen_overflows
from loadtest.servers import Target

DEVICE = "bench"


@dataclass
class GroupsSpec:
    worker: int
    workers: int
    groups: int
    size: int
    senders: int
    messages: int
    rate: float
    urls: list[str]  # [A] or [A, B]
    tag: str
    drain_timeout: float = 5.0
    max_time: float = 300.0
    settle: float = 0.5
    source_addrs: list[str] = field(default_factory=list)

    def mine(self) -> list[tuple[int, int]]:
        s = self.size
        return [
            (g, m)
            for g in range(self.groups)
            for m in range(s)
            if (g * s + m) % self.workers == self.worker
        ]

    def name(self, g: int, m: int) -> str:
        return f"g{self.tag}g{g}m{m}"


class GroupsWorker:
    def __init__(self, spec: GroupsSpec) -> None:
        self.spec = spec
        self.stats = Stats()
        self.lat = array("q")
        self.sockets: dict[tuple[int, int], Socket] = {}
        self.chats: dict[int, str] = {}
        self.chat_group: dict[str, int] = {}
        self.got: dict[tuple[int, int], bytearray] = {}  # receiver -> (sender slot, j) seen
        self.delivered: dict[tuple[int, int], int] = {}
        self.confirmed: dict[int, int] = {}  # group -> confirmed sends (ours)
        self.sent = self.send_errors = self.deliveries = 0
        self.first_send = self.last_send = self.last_recv = self.last_confirm = 0
        self.max_lag = 0
        self.progress = asyncio.Event()

    # ------------------------------------------------------------ Socket owner
    def on_message(self, sock: Socket, m: dict[str, Any], now: int) -> None:
        if str(m["sender_id"]) == sock.me:
            return  # our own message: the sending device gets it too (acked, not a delivery)
        s, j, ts = (int(x) for x in m["text"].split())
        key = (self.chat_group[m["chat_id"]], sock.index)
        seen = self.got[key]
        k = (s % self.spec.senders) * self.spec.messages + j
        if seen[k]:
            self.stats.dup += 1
            return
        seen[k] = 1
        self.delivered[key] += 1
        self.deliveries += 1
        self.lat.append(now - ts)
        self.last_recv = now
        self.progress.set()

    def on_sent(self, sock: Socket, f: dict[str, Any]) -> None:
        g = self.chat_group[f["message"]["chat_id"]]
        self.confirmed[g] = self.confirmed.get(g, 0) + 1
        self.last_confirm = now_ns()
        self.progress.set()

    def on_error(self, sock: Socket, f: dict[str, Any]) -> None:
        if f.get("ref"):
            self.send_errors += 1
            self.progress.set()

    # ------------------------------------------------------------ phases
    async def run(self, phase: Phase) -> None:
        sp = self.spec
        mine = sp.mine()
        http = Sessions(sp.source_addrs)
        try:
            async with asyncio.timeout(sp.max_time):
                users = await signup_many(http.rest, sp.urls[0], [sp.name(g, m) for g, m in mine])
            ids = await phase.step("registered", {n: uid for n, (uid, _) in users.items()})
            made = {}
            for g, m in mine:
                if m == 0:
                    token = users[sp.name(g, 0)][1]
                    others = [ids[sp.name(g, x)] for x in range(1, sp.size)]
                    body = {"kind": "group", "title": f"bench {g}", "member_ids": others}
                    made[g] = await create_chat(http.rest, sp.urls[0], token, body)
            self.chats = {int(g): c for g, c in (await phase.step("chats", made)).items()}
            self.chat_group = {c: g for g, c in self.chats.items()}
            t = now_ns()

            async def connect(i: int) -> None:
                g, m = mine[i]
                sock = Socket(self, self.stats, m, ids[sp.name(g, m)])
                url = sp.urls[m % len(sp.urls)]
                token = users[sp.name(g, m)][1]
                await sock.connect_retrying(http.pick(i), url, token, DEVICE, sp.max_time)
                self.sockets[(g, m)] = sock
                if m >= sp.senders:
                    self.got[(g, m)] = bytearray(sp.senders * sp.messages)
                    self.delivered[(g, m)] = 0

            sem = asyncio.Semaphore(64)

            async def bounded(i: int) -> None:
                async with sem:
                    await connect(i)

            async with asyncio.timeout(sp.max_time):
                await asyncio.gather(*(bounded(i) for i in range(len(mine))))
            connect_s = (now_ns() - t) / 1e9
            await asyncio.sleep(sp.settle)
            t0 = await phase.step("ready", {"connect_s": connect_s})
            await asyncio.sleep(max(0, t0 - now_ns()) / 1e9)
            cpu0 = time.process_time()
            timed_out = False
            try:
                async with asyncio.timeout(sp.max_time):
                    await self.sends(t0, mine)
                    drained = await self.drain()
            except TimeoutError:
                timed_out, drained = True, False
            res = self.result(time.process_time() - cpu0, timed_out, drained)
            await phase.step("done", res)
        finally:
            await asyncio.gather(
                *(s.close() for s in self.sockets.values()), return_exceptions=True
            )
            await http.close()

    async def send(self, g: int, m: int, j: int) -> None:
        sock = self.sockets[(g, m)]
        s = g * self.spec.senders + m
        ts = now_ns()
        try:
            await sock.send(
                {
                    "type": "send",
                    "chat_id": self.chats[g],
                    "client_msg_id": f"{self.spec.tag}-{s}-{j}",
                    "text": f"{s} {j} {ts}",
                }
            )
            self.sent += 1
            self.first_send = self.first_send or ts
            self.last_send = now_ns()
        except Exception as e:  # count and keep going
            self.send_errors += 1
            self.stats.first_error = self.stats.first_error or repr(e)[:300]

    async def sends(self, t0: int, mine: list[tuple[int, int]]) -> None:
        sp = self.spec
        senders = sorted((g * sp.senders + m, g, m) for g, m in mine if m < sp.senders)
        if sp.rate <= 0:

            async def flat(g: int, m: int) -> None:
                for j in range(sp.messages):
                    await self.send(g, m, j)

            await asyncio.gather(*(flat(g, m) for _, g, m in senders))
            return
        ns_per = 1e9 / sp.rate
        total = sp.groups * sp.senders
        for j in range(sp.messages):
            for s, g, m in senders:
                due = t0 + int((j * total + s) * ns_per)
                d = due - now_ns()
                if d > 0:
                    await asyncio.sleep(d / 1e9)
                elif -d > self.max_lag:
                    self.max_lag = -d
                await self.send(g, m, j)

    def complete(self) -> bool:
        per_group = self.spec.senders * self.spec.messages
        if any(n < per_group for n in self.delivered.values()):
            return False
        return sum(self.confirmed.values()) + self.send_errors >= self.sent

    async def drain(self) -> bool:
        while not self.complete():
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.spec.drain_timeout)
            except TimeoutError:
                return False
        return True

    def result(self, cpu: float, timed_out: bool, drained: bool) -> dict[str, Any]:
        per_group: dict[int, list[int]] = {}
        for (g, _), n in self.delivered.items():
            per_group.setdefault(g, []).append(n)
        st = self.stats
        return {
            "sent": self.sent,
            "confirmed": dict(self.confirmed),
            "send_errors": self.send_errors,
            "received_per_group": per_group,
            "deliveries": self.deliveries,
            "dup": st.dup,
            "out_of_order": st.out_of_order,
            "dropped": st.dropped,
            "connect_failures": st.connect_failures,
            "error_codes": st.error_codes,
            "first_error": st.first_error,
            "lat": self.lat,
            "first_send": self.first_send,
            "last_send": self.last_send,
            "last_recv": self.last_recv,
            "last_confirm": self.last_confirm,
            "max_lag": self.max_lag,
            "cpu": cpu,
            "timed_out": timed_out,
            "drained": drained,
        }


async def groups_main(spec: GroupsSpec, phase: Phase) -> None:
    await GroupsWorker(spec).run(phase)


# ---------------------------------------------------------------------------- parent side
def run_groups(a: Any, target: Target, topology: str, rate: float) -> dict[str, Any]:
    """One groups run on fresh nodes: the JSON line."""
    with target.servers(2 if topology == "cross" else 1) as srv:
        tag = secrets.token_hex(3)
        K = max(1, a.workers)
        S = a.group_size
        specs = [
            GroupsSpec(
                worker=w,
                workers=K,
                groups=a.groups,
                size=S,
                senders=a.group_senders,
                messages=a.messages,
                rate=rate,
                urls=srv.urls,
                tag=tag,
                drain_timeout=a.drain_timeout,
                max_time=a.max_time,
                settle=a.settle,
            )
            for w in range(K)
        ]
        fd = a.groups * S * 2 // K + 1024
        with Workers(groups_main, specs, fd) as ws:
            t_setup = time.monotonic()
            ids: dict[str, str] = {}
            for part in ws.gather("registered", 2 * a.max_time):
                ids.update(part)
            ws.release(ids)
            chats: dict[int, str] = {}
            for part in ws.gather("chats", a.max_time):
                chats.update(part)
            overflows0 = listen_overflows()
            ws.release(chats)
            ready = ws.gather("ready", 2 * a.max_time + 60)
            overflows = delta(listen_overflows(), overflows0)
            setup_s = time.monotonic() - t_setup
            spids, ipids = srv.pids, target.infra_pids()
            scpu0, icpu0 = cpu_seconds(spids), cpu_seconds(ipids)
            prof = profiling.start(a.profile, spids, f"groups-{topology}-{rate:g}")
            t0 = now_ns() + 200_000_000
            ws.release(t0)
            results = ws.gather("done", a.max_time + 120)
            profiling.finish(prof)
            scpu, icpu = cpu_seconds(spids) - scpu0, cpu_seconds(ipids) - icpu0
            hwm = hwm_bytes(spids)
        base = {
            "kind": "groups",
            "target": "node",
            "topology": topology,
            "rate_offered": rate,
            "groups": a.groups,
            "group_size": S,
            "senders_per_group": a.group_senders,
            "messages": a.messages,
            "workers": K,
            "label": a.label,
            "setup_s": round(setup_s, 2),
            "connect_s": round(max(r["connect_s"] for r in ready), 2),
            "listen_overflows": overflows,
        }
        line = report.groups_line(results, base, scpu, icpu if ipids else None, hwm)
    line["server_log_errors"] = srv.log_errors
    return line
