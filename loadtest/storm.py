"""The 'storm' workload: N devices with an unacked backlog reconnect at once after their node dies.

Two nodes, A and B, share PostgreSQL and Redis. Sender s (one per `per_sender` devices) opens a
direct chat with each of its devices; senders connect to B, devices to A. Then:

1. each sender sends `acked` messages into each chat; every device receives them and acks the
   highest seq (explicitly; then waits 1 s, past the contract's 250 ms ack durability);
2. each sender sends `backlog` more; the devices receive them on A and do NOT ack: every device
   now has `backlog` unacked messages;
3. the parent waits `--stats-wait` s (PostgreSQL's idle backends flush their counters every
   10 s), reads pg_stat_database for the run's database and B's CPU, SIGKILLs node A's process
   group, and releases the workers with that moment t_kill;
4. every device reconnects to B at once (the same device_id), without acking: `reconnect_s` is
   when the last one had its `ready`, `caught_up_s` when the last one had every backlog message
   of its chat confirmed by `sent` (both since t_kill);
5. after `--stats-wait` s more the parent reads pg_stat_database again: transactions (asyncpg
   runs each statement outside a transaction block as one) and rows read per device.

lost: a confirmed backlog message (above the seq the device acked) some device did not get after
reconnecting (a message it got on A before the kill but did not ack must come again);
dup_after_ack: a message at or below the acked seq that came again; dup: a seq one connection got
twice, plus dup_after_ack. A send refused in setup (`send_errors`) leaves that chat with fewer
messages; the acked seq is what each device really acked.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from loadtest import profiling
from loadtest.client import Sessions, Socket, Stats, create_chat, now_ns, signup_many
from loadtest.harness import Phase, Workers
from loadtest.procstats import cpu_by_pid, cpu_delta, cpu_seconds, delta, listen_overflows
from loadtest.servers import Target

# setup sends 1,000s of messages per sender: lift the per-user rate limits (setup only)
NODE_ENV = {"MESSENGER_RATE_BURST": "1000000", "MESSENGER_RATE_PER_SECOND": "1000000"}


@dataclass
class StormSpec:
    worker: int
    workers: int
    devices: int
    per_sender: int
    backlog: int
    acked: int
    urls: list[str]  # [A, B]
    tag: str
    drain_timeout: float = 5.0
    max_time: float = 300.0
    concurrency: int = 1000
    source_addrs: list[str] = field(default_factory=list)


class StormWorker:
    def __init__(self, spec: StormSpec) -> None:
        self.spec = spec
        self.stats = Stats()
        senders = math.ceil(spec.devices / spec.per_sender)
        self.senders = [s for s in range(senders) if s % spec.workers == spec.worker]
        self.devs = [
            d
            for s in self.senders
            for d in range(s * spec.per_sender, min(spec.devices, (s + 1) * spec.per_sender))
        ]
        self.chats: dict[int, str] = {}  # device -> chat
        self.chat_dev: dict[str, int] = {}
        self.socks: dict[int, Socket] = {}
        self.sender_socks: dict[int, Socket] = {}
        self.confirmed: dict[str, set[int]] = {}  # chat -> seqs confirmed by `sent`
        self.sent = self.send_errors = 0
        self.acked_seq: dict[int, int] = {}  # device -> the seq it acked before the kill
        self.backlog: dict[int, set[int]] = {}  # device -> confirmed seqs above it
        self.after: dict[int, set[int]] = {}  # device -> backlog seqs got after the reconnect
        self.missing: dict[int, int] = {}
        self.done_at: dict[int, int] = {}
        self.dup_after_ack = 0
        self.reconnecting = False
        self.progress = asyncio.Event()

    def name(self, kind: str, i: int) -> str:
        return f"s{self.spec.tag}{kind}{i}"

    # ------------------------------------------------------------ Socket owner
    def on_message(self, sock: Socket, m: dict[str, Any], now: int) -> None:
        if sock.index < 0:
            return  # a sender's own copy
        seq = m["seq"]
        if self.reconnecting:
            d = sock.index
            if seq <= self.acked_seq[d]:
                self.dup_after_ack += 1
            elif seq in self.backlog[d] and seq not in self.after[d]:
                self.after[d].add(seq)
                self.missing[d] -= 1
                if self.missing[d] == 0:
                    self.done_at[d] = now
        self.progress.set()

    def on_sent(self, sock: Socket, f: dict[str, Any]) -> None:
        m = f["message"]
        self.confirmed.setdefault(m["chat_id"], set()).add(m["seq"])
        self.progress.set()

    def on_error(self, sock: Socket, f: dict[str, Any]) -> None:
        if f.get("ref"):
            self.send_errors += 1
            self.progress.set()

    # ------------------------------------------------------------ steps
    async def wait_for(self, cond: Any) -> bool:
        """Until cond() holds, or nothing happened for drain_timeout s."""
        while not cond():
            self.progress.clear()
            try:
                await asyncio.wait_for(self.progress.wait(), self.spec.drain_timeout)
            except TimeoutError:
                return False
        return True

    async def round(self, count: int, start: int) -> None:
        """Every sender sends `count` messages into each of its chats; all confirmed."""

        async def one(s: int) -> None:
            sock = self.sender_socks[s]
            for j in range(count):
                for d in range(s * self.spec.per_sender, (s + 1) * self.spec.per_sender):
                    if d in self.chats:
                        cmid = f"{self.spec.tag}-{d}-{start + j}"
                        body = {"type": "send", "chat_id": self.chats[d], "client_msg_id": cmid}
                        await sock.send({**body, "text": f"{d} {start + j}"})
                        self.sent += 1

        await asyncio.gather(*(one(s) for s in self.senders))
        total = start + count
        await self.wait_for(
            lambda: (
                sum(map(len, self.confirmed.values())) + self.send_errors >= self.sent
                and all(len(self.socks[d].seen.get(self.chats[d], ())) >= total for d in self.devs)
            )
        )

    async def run(self, phase: Phase) -> None:
        sp = self.spec
        a_url, b_url = sp.urls
        http = Sessions(sp.source_addrs)
        try:
            names = [self.name("s", s) for s in self.senders] + [
                self.name("d", d) for d in self.devs
            ]
            async with asyncio.timeout(sp.max_time):
                users = await signup_many(http.rest, b_url, names)
                sem = asyncio.Semaphore(32)

                async def chat(d: int) -> None:
                    sender = users[self.name("s", d // sp.per_sender)][1]
                    body = {"kind": "direct", "user_id": users[self.name("d", d)][0]}
                    async with sem:
                        self.chats[d] = await create_chat(http.rest, b_url, sender, body)

                await asyncio.gather(*(chat(d) for d in self.devs))
            self.chat_dev = {c: d for d, c in self.chats.items()}
            await self.connect_devices(http, users, a_url, 32, partial=False)
            for s in self.senders:
                sock = Socket(self, self.stats, -1 - s, users[self.name("s", s)][0])
                await sock.connect(http.pick(s), b_url, users[self.name("s", s)][1], "sender")
                self.sender_socks[s] = sock
            async with asyncio.timeout(sp.max_time):
                await self.round(sp.acked, 0)
                for d in self.devs:  # what the device acks: the highest seq it has
                    self.acked_seq[d] = self.socks[d].last.get(self.chats[d], 0)
                    self.socks[d].ack_all()
                await asyncio.sleep(1.0)  # acks are durable within 250 ms
                await self.round(sp.backlog, sp.acked)
            for d in self.devs:
                self.socks[d].closing = True  # their node is about to die: not a drop
                confirmed = self.confirmed.get(self.chats[d], set())
                self.backlog[d] = {s for s in confirmed if s > self.acked_seq[d]}
                self.missing[d] = len(self.backlog[d])
                self.after[d] = set()
            t_kill = await phase.step("primed", {"sent": self.sent})
            self.done_at = {d: t_kill for d, n in self.missing.items() if n == 0}
            self.reconnecting = True
            self.stats.dup = 0  # from here on: duplicates within the new connections
            failures_before = self.stats.connect_failures
            t_ready, n_ready = await self.connect_devices(
                http, users, b_url, self.spec.concurrency, partial=True
            )
            caught = False
            if n_ready == len(self.devs):
                try:
                    async with asyncio.timeout(self.spec.max_time):
                        caught = await self.wait_for(lambda: len(self.done_at) == len(self.devs))
                except TimeoutError:
                    pass
            await phase.step(
                "caught_up",
                {
                    "reconnect_s": (t_ready - t_kill) / 1e9,
                    "devices_ready": n_ready,
                    "devices_caught_up": len(self.done_at),
                    "caught_up_s": (max(self.done_at.values(), default=t_kill) - t_kill) / 1e9,
                    "caught_up_all": caught,
                    "lost": sum(self.missing.values()),
                    "dup": self.stats.dup,
                    "dup_after_ack": self.dup_after_ack,
                    "dropped": self.stats.dropped,
                    "connect_failures": self.stats.connect_failures - failures_before,
                    "first_connect_error": self.stats.first_connect_error,
                    "sent": self.sent,
                    "send_errors": self.send_errors,
                    "error_codes": self.stats.error_codes,
                    "first_error": self.stats.first_error,
                },
            )
        finally:
            socks = [*self.socks.values(), *self.sender_socks.values()]
            await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)
            await http.close()

    async def connect_devices(
        self, http: Sessions, users: dict[str, Any], url: str, concurrency: int, partial: bool
    ) -> tuple[int, int]:
        """Every device of ours connects to `url` (at most `concurrency` at once, each trying
        again like a client when an attempt fails) within max_time s; (when the last one had its
        ready frame, how many did). Not `partial`: all must."""
        sem = asyncio.Semaphore(concurrency)
        ready: list[int] = []

        async def one(n: int, d: int) -> None:
            uid, token = users[self.name("d", d)]
            sock = Socket(self, self.stats, d, uid, ack=False)
            async with sem:
                await sock.connect_retrying(http.pick(n), url, token, "storm", self.spec.max_time)
            self.socks[d] = sock
            ready.append(sock.ready_at)

        tasks = [asyncio.ensure_future(one(n, d)) for n, d in enumerate(self.devs)]
        done, pending = await asyncio.wait(tasks, timeout=self.spec.max_time)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        failed = [t.exception() for t in done if t.exception() is not None]
        if not partial and (pending or failed):
            raise RuntimeError(
                f"{len(pending) + len(failed)} devices could not connect: {failed[:1]}"
            )
        return max(ready, default=now_ns()), len(ready)


async def storm_main(spec: StormSpec, phase: Phase) -> None:
    await StormWorker(spec).run(phase)


# ---------------------------------------------------------------------------- parent side
async def pg_stats(url: str) -> dict[str, Any]:
    """The run's database: transactions and rows read so far, and per table the sequential
    scans, rows they read, and index scans."""
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit + xact_rollback AS xacts, tup_returned + tup_fetched AS rows "
            "FROM pg_stat_database WHERE datname = current_database()"
        )
        tables = await conn.fetch(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan "
            "FROM pg_stat_user_tables"
        )
        return {
            "xacts": int(row["xacts"]),
            "rows": int(row["rows"]),
            "tables": {
                t["relname"]: [t["seq_scan"], t["seq_tup_read"], t["idx_scan"]] for t in tables
            },
        }
    finally:
        await conn.close()


def table_deltas(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    """Per table with any scans in between: [seq scans, rows they read, index scans] per device."""
    out = {}
    for name, (seq, rows, idx) in after["tables"].items():
        s0, r0, i0 = before["tables"].get(name, [0, 0, 0])
        if seq - s0 or idx - i0:
            out[name] = [
                round((seq - s0) / n, 2),
                round((rows - r0) / n, 1),
                round((idx - i0) / n, 2),
            ]
    return out


def run_storm(a: Any, target: Target) -> dict[str, Any]:
    if a.urls:
        raise SystemExit("storm kills a node: it runs on nodes it starts, not --url")
    with target.servers(2, NODE_ENV) as srv:
        assert srv.group is not None and srv.database_url
        K = max(1, a.workers)
        specs = [
            StormSpec(
                worker=w,
                workers=K,
                devices=a.devices,
                per_sender=a.per_sender,
                backlog=a.backlog,
                acked=a.acked,
                urls=srv.urls,
                tag=secrets.token_hex(3),
                drain_timeout=a.drain_timeout,
                max_time=a.max_time,
                concurrency=max(a.connect_concurrency, 1000),
            )
            for w in range(K)
        ]
        with Workers(storm_main, specs, 2 * a.devices // K + 4096) as ws:
            t = time.monotonic()
            primed = ws.gather("primed", 3 * a.max_time)
            setup_s = time.monotonic() - t
            time.sleep(a.stats_wait)
            b_pid = srv.pids[1:]
            ipids = target.infra_pids()
            pg0 = asyncio.run(pg_stats(srv.database_url))
            cpu0, icpu0 = cpu_seconds(b_pid), cpu_by_pid(ipids)
            overflows0 = listen_overflows()
            prof = profiling.start(getattr(a, "profile", None), b_pid, "storm-survivor")
            t_kill = now_ns()
            srv.group.kill(0)
            ws.release(t_kill)
            try:
                res = ws.gather("caught_up", 2 * a.max_time)
            finally:
                profiling.finish(prof)  # node B from the kill until every device caught up
            overflows = delta(listen_overflows(), overflows0)
            time.sleep(a.stats_wait)
            pg1 = asyncio.run(pg_stats(srv.database_url))
            cpu, icpu = cpu_seconds(b_pid) - cpu0, cpu_delta(icpu0, cpu_by_pid(ipids))
            ws.release()
    N = a.devices
    codes: dict[str, int] = {}
    for r in res:
        for code, n in r["error_codes"].items():
            codes[code] = codes.get(code, 0) + n
    dup_after_ack = sum(r["dup_after_ack"] for r in res)
    line = {
        "kind": "storm",
        "target": "node",
        "topology": "cross",
        "devices": N,
        "backlog": a.backlog,
        "acked": a.acked,
        "per_sender": a.per_sender,
        "workers": K,
        "label": a.label,
        "setup_s": round(setup_s, 2),
        "sent": sum(r["sent"] for r in primed),
        "reconnect_s": round(max(r["reconnect_s"] for r in res), 3),
        "caught_up_s": round(max(r["caught_up_s"] for r in res), 3),
        "caught_up_all": all(r["caught_up_all"] for r in res),
        "devices_ready": sum(r["devices_ready"] for r in res),
        "devices_caught_up": sum(r["devices_caught_up"] for r in res),
        "lost": sum(r["lost"] for r in res),
        "dup": sum(r["dup"] for r in res) + dup_after_ack,
        "dup_after_ack": dup_after_ack,
        "dropped": sum(r["dropped"] for r in res),
        "connect_failures": sum(r["connect_failures"] for r in res),
        "send_errors": sum(r["send_errors"] for r in res),
        "error_frames": codes,
        "pg_xacts": pg1["xacts"] - pg0["xacts"],
        "pg_xacts_per_device": round((pg1["xacts"] - pg0["xacts"]) / N, 2),
        "pg_rows_per_device": round((pg1["rows"] - pg0["rows"]) / N, 1),
        "pg_tables_per_device": table_deltas(pg0, pg1, N),
        "listen_overflows": overflows,
        "server_cpu_s": round(cpu, 2),
        "infra_cpu_s": round(icpu, 2) if ipids else None,
        "stats_wait_s": a.stats_wait,
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    for key in ("first_error", "first_connect_error"):
        first = next((r[key] for r in res if r[key]), "")
        if first:
            line[key] = first
    line["server_log_errors"] = srv.log_errors
    return line
