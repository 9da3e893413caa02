"""The 'presence' workload (issue 12's connect storm): a group of S members and D users in direct
chats (pairs) connect at once to one node.

Setup: every worker registers its users (group member m belongs to worker m % K, direct pair p,
users 2p and 2p+1, to worker p % K); the parent merges the ids; member 0's worker creates the
group, each worker the direct chats of its pairs. Then the parent gives one start time t0 and
every worker opens all its sockets at once (at most `--connect-concurrency` per worker at a time).

Measured: `all_ready_s`, from t0 until the last socket had its `ready` frame; presence frames
received until none came for `--quiet` s (both shapes: `{"user_id","online"}` counts one user
announced, `{"users":[…]}` as many as it lists), in total and per device (group members and
direct users apart); `direct_peer_missed`, direct users never told that their peer is online
(their only contact: the contract's 5 s apply); node CPU from t0 to the end of the count;
`presence.update_failed` lines in the node's log; sockets dropped. Then, as a delivery check
under the same load, user 2p of every pair sends one message to 2p+1: lost = confirmed but not
received, dup as everywhere.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from loadtest.client import Sessions, Socket, Stats, create_chat, now_ns, signup_many
from loadtest.harness import Phase, Workers
from loadtest.procstats import cpu_seconds, delta, listen_overflows
from loadtest.servers import Target

DEVICE = "bench"


@dataclass
class PresenceSpec:
    worker: int
    workers: int
    group_size: int
    direct: int  # users in direct chats (pairs)
    url: str
    tag: str
    quiet: float = 3.0
    drain_timeout: float = 5.0
    max_time: float = 300.0
    concurrency: int = 1000
    source_addrs: list[str] = field(default_factory=list)


class PresenceWorker:
    def __init__(self, spec: PresenceSpec) -> None:
        self.spec = spec
        self.stats = Stats()
        K, w = spec.workers, spec.worker
        self.members = [m for m in range(spec.group_size) if m % K == w]
        self.pairs = [p for p in range(spec.direct // 2) if p % K == w]
        self.socks: dict[str, Socket] = {}
        self.peer_name: dict[str, str] = {}
        self.last_presence = now_ns()
        self.sent = self.confirmed = self.received = self.send_errors = 0
        self.progress = asyncio.Event()

    def name(self, kind: str, i: int) -> str:
        return f"p{self.spec.tag}{kind}{i}"

    # ------------------------------------------------------------ Socket owner
    def on_message(self, sock: Socket, m: dict[str, Any], now: int) -> None:
        if str(m["sender_id"]) != sock.me:
            self.received += 1
            self.progress.set()

    def on_sent(self, sock: Socket, f: dict[str, Any]) -> None:
        self.confirmed += 1
        self.progress.set()

    def on_error(self, sock: Socket, f: dict[str, Any]) -> None:
        if f.get("ref"):
            self.send_errors += 1
            self.progress.set()

    # ------------------------------------------------------------ phases
    async def run(self, phase: Phase) -> None:
        sp = self.spec
        http = Sessions(sp.source_addrs)
        mine = [self.name("g", m) for m in self.members]
        for p in self.pairs:
            mine += [self.name("d", 2 * p), self.name("d", 2 * p + 1)]
        try:
            async with asyncio.timeout(sp.max_time):
                users = await signup_many(http.rest, sp.url, mine)
            ids = await phase.step("registered", {n: uid for n, (uid, _) in users.items()})
            chats: dict[str, str] = {}
            async with asyncio.timeout(sp.max_time):
                if 0 in self.members and sp.group_size > 1:
                    body = {
                        "kind": "group",
                        "title": "presence storm",
                        "member_ids": [ids[self.name("g", m)] for m in range(1, sp.group_size)],
                    }
                    chats["group"] = await create_chat(
                        http.rest, sp.url, users[self.name("g", 0)][1], body
                    )
                sem = asyncio.Semaphore(32)

                async def direct(p: int) -> None:
                    a, b = self.name("d", 2 * p), self.name("d", 2 * p + 1)
                    async with sem:
                        chats[a] = await create_chat(
                            http.rest, sp.url, users[a][1], {"kind": "direct", "user_id": ids[b]}
                        )

                await asyncio.gather(*(direct(p) for p in self.pairs))
            t0 = await phase.step("setup")
            await asyncio.sleep(max(0, t0 - now_ns()) / 1e9)
            await self.connect_all(http, users, ids)
            t_ready = max((s.ready_at for s in self.socks.values()), default=t0)
            frames_at_ready = self.stats.presence_frames
            self.last_presence = max(self.last_presence, now_ns())  # the quiet count starts now
            await self.until_quiet()
            counts = self.presence_counts()
            await phase.step(
                "counted",
                {
                    "ready_s": (t_ready - t0) / 1e9,
                    "ready": len(self.socks),
                    "presence_frames_at_ready": frames_at_ready,
                    "quiet_at": self.last_presence,
                    **counts,
                },
            )
            await self.deliver_check(chats)
            await phase.step(
                "done",
                {
                    "sent": self.sent,
                    "confirmed": self.confirmed,
                    "received": self.received,
                    "send_errors": self.send_errors,
                    "dup": self.stats.dup,
                    "dropped": self.stats.dropped,
                    "connect_failures": self.stats.connect_failures,
                    "first_connect_error": self.stats.first_connect_error,
                    "error_codes": self.stats.error_codes,
                    "first_error": self.stats.first_error,
                },
            )
        finally:
            await asyncio.gather(*(s.close() for s in self.socks.values()), return_exceptions=True)
            await http.close()

    async def connect_all(self, http: Sessions, users: dict[str, Any], ids: dict[str, str]) -> None:
        sem = asyncio.Semaphore(self.spec.concurrency)
        peers = {}
        for p in self.pairs:
            a, b = self.name("d", 2 * p), self.name("d", 2 * p + 1)
            peers[a], peers[b] = ids[b], ids[a]
            self.peer_name[a], self.peer_name[b] = b, a

        async def one(n: int, name: str) -> None:
            watch = {peers[name]} if name in peers else None
            sock = Socket(self, self.stats, n, users[name][0], watch=watch)
            sock.on_presence = self.timed(sock.on_presence)  # type: ignore[method-assign]
            async with sem:
                await sock.connect_retrying(
                    http.pick(n), self.spec.url, users[name][1], DEVICE, self.spec.max_time
                )
            self.socks[name] = sock

        tasks = [asyncio.ensure_future(one(n, name)) for n, name in enumerate(users)]
        _, pending = await asyncio.wait(tasks, timeout=self.spec.max_time)
        for task in pending:  # not ready within max_time: reported as devices not ready
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def timed(self, handler: Any) -> Any:
        def on_presence(f: dict[str, Any]) -> None:
            self.last_presence = now_ns()
            handler(f)

        return on_presence

    async def until_quiet(self) -> None:
        deadline = now_ns() + int(self.spec.max_time * 1e9)
        while now_ns() < deadline:
            idle = (now_ns() - self.last_presence) / 1e9
            if idle >= self.spec.quiet:
                return
            await asyncio.sleep(self.spec.quiet - idle)

    def presence_counts(self) -> dict[str, Any]:
        group = [s for n, s in self.socks.items() if n.startswith(f"p{self.spec.tag}g")]
        direct = [s for s in self.socks.values() if s.watch]
        both = [s for n, s in self.socks.items() if self.peer_name.get(n) in self.socks]
        return {
            "frames_group": sum(s.presence_frames for s in group),
            "frames_direct": sum(s.presence_frames for s in direct),
            "max_frames_per_device": max(
                (s.presence_frames for s in self.socks.values()), default=0
            ),
            "presence_frames": self.stats.presence_frames,
            "presence_users": self.stats.presence_users,
            "direct_peer_missed": sum(1 for s in both if not s.seen_online),
        }

    async def deliver_check(self, chats: dict[str, str]) -> None:
        """User 2p sends one message to 2p+1, in every pair where both are still connected
        (a dropped socket is counted as such, not as a lost message)."""

        def live(name: str) -> bool:
            sock = self.socks.get(name)
            return sock is not None and sock.ws is not None and not sock.ws.closed

        for p in self.pairs:
            a, b = self.name("d", 2 * p), self.name("d", 2 * p + 1)
            if not (live(a) and live(b)):
                continue
            cmid = f"{self.spec.tag}-{p}"
            try:
                await self.socks[a].send(
                    {"type": "send", "chat_id": chats[a], "client_msg_id": cmid, "text": "hi"}
                )
            except (OSError, RuntimeError) as e:  # closed under us just now
                self.stats.first_error = self.stats.first_error or repr(e)[:300]
                continue
            self.sent += 1

        def done() -> bool:
            answered = self.confirmed + self.send_errors >= self.sent
            return answered and self.received >= self.sent - self.send_errors

        while not done():
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.spec.drain_timeout)
            except TimeoutError:
                return


async def presence_main(spec: PresenceSpec, phase: Phase) -> None:
    await PresenceWorker(spec).run(phase)


# ---------------------------------------------------------------------------- parent side
def run_presence(a: Any, target: Target) -> dict[str, Any]:
    S, D = a.group_size, a.direct_users - a.direct_users % 2
    with target.servers(1) as srv:
        K = max(1, a.workers)
        tag = secrets.token_hex(3)
        specs = [
            PresenceSpec(
                worker=w,
                workers=K,
                group_size=S,
                direct=D,
                url=srv.urls[0],
                tag=tag,
                quiet=a.quiet,
                drain_timeout=a.drain_timeout,
                max_time=a.max_time,
                concurrency=max(a.connect_concurrency, 1000),
            )
            for w in range(K)
        ]
        with Workers(presence_main, specs, 2 * (S + D) // K + 4096) as ws:
            t = time.monotonic()
            ids: dict[str, str] = {}
            for part in ws.gather("registered", 2 * a.max_time):
                ids.update(part)
            ws.release(ids)
            ws.gather("setup", 2 * a.max_time)
            setup_s = time.monotonic() - t
            spids, ipids = srv.pids, target.infra_pids()
            cpu0, icpu0 = cpu_seconds(spids), cpu_seconds(ipids)
            overflows0 = listen_overflows()
            t0 = now_ns() + 200_000_000
            ws.release(t0)
            counted = ws.gather("counted", 3 * a.max_time)
            overflows = delta(listen_overflows(), overflows0)
            cpu, icpu = cpu_seconds(spids) - cpu0, cpu_seconds(ipids) - icpu0
            ws.release()
            done = ws.gather("done", a.max_time + 60)
            ws.release()
        n = S + D
        frames = sum(c["presence_frames"] for c in counted)
        quiet_at = max(c["quiet_at"] for c in counted)
        sent = sum(d["sent"] for d in done)
        line: dict[str, Any] = {
            "kind": "presence",
            "target": "url" if a.urls else "node",
            "topology": "single",
            "group_size": S,
            "direct_users": D,
            "devices": n,
            "workers": K,
            "label": a.label,
            "setup_s": round(setup_s, 2),
            "all_ready_s": round(max(c["ready_s"] for c in counted), 3),
            "devices_ready": sum(c["ready"] for c in counted),
            "all_ready": sum(c["ready"] for c in counted) == n,
            "presence_settled_s": round((quiet_at - t0) / 1e9, 3),
            "presence_frames": frames,
            "presence_frames_at_ready": sum(c["presence_frames_at_ready"] for c in counted),
            "presence_users": sum(c["presence_users"] for c in counted),
            "presence_frames_per_device": round(frames / n, 2),
            "presence_users_per_device": round(sum(c["presence_users"] for c in counted) / n, 2),
            "presence_frames_per_group_member": round(
                sum(c["frames_group"] for c in counted) / max(1, S), 2
            ),
            "presence_frames_per_direct_user": round(
                sum(c["frames_direct"] for c in counted) / max(1, D), 2
            ),
            "max_presence_frames_per_device": max(c["max_frames_per_device"] for c in counted),
            "direct_peer_missed": sum(c["direct_peer_missed"] for c in counted),
            "listen_overflows": overflows,
            "server_cpu_s": round(cpu, 2),
            "infra_cpu_s": round(icpu, 2) if ipids else None,
            "sent": sent,
            "confirmed": sum(d["confirmed"] for d in done),
            "lost": sum(d["confirmed"] for d in done) - sum(d["received"] for d in done),
            "dup": sum(d["dup"] for d in done),
            "dropped": sum(d["dropped"] for d in done),
            "connect_failures": sum(d["connect_failures"] for d in done),
            "send_errors": sum(d["send_errors"] for d in done),
            "unconfirmed": sent
            - sum(d["confirmed"] for d in done)
            - sum(d["send_errors"] for d in done),
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        for key in ("first_error", "first_connect_error"):
            first = next((d[key] for d in done if d[key]), "")
            if first:
                line[key] = first
    line["server_log_errors"] = srv.log_errors
    line["presence_update_failed"] = (
        srv.group.count_in_logs("presence.update_failed") if srv.group else None
    )
    return line
