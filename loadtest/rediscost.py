"""`python -m loadtest.bench --redis-cluster` (`./dev bench --redis-cluster`): what a message costs
Redis, over one Redis and over a Redis Cluster, with 2 and 3 nodes, side by side.

Every run gets fresh servers: a Redis of its own from the system's redis-server (7.x, the same
binary both ways) — one server, or a Redis Cluster of three masters with a replica each
(`node.embedded.redis_cluster`) —, a fresh database on PostgreSQL (embedded unless
`--database-url`) and N node processes. The workload is 'pairs' in the cross topology: senders on
the first node, receivers on the others (worker w's receivers on node 1 + w mod (N-1)), so every
message crosses nodes through Redis.

Around the measured phase (from after connecting to when every worker drained) the bench reads
`INFO commandstats` (calls per command, a script's own calls included) and `INFO cpu`
(used_cpu_user + used_cpu_sys) on every Redis server, and the CPU of the nodes and of
PostgreSQL (psutil). Per delivered message it reports Redis calls and Redis CPU on the masters
(summed over shards, and per shard), CPU on the replicas, node CPU and PostgreSQL CPU. The window
also holds the heartbeats and lease renewals of the nodes (a few calls a second per node).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from loadtest import report
from loadtest.client import now_ns
from loadtest.harness import Workers
from loadtest.procstats import cpu_seconds
from loadtest.servers import ServerGroup, listener_pids, with_path
from loadtest.workload import Spec, worker_main

REDIS_KINDS = ("single", "cluster")


class RedisUnderTest:
    """One Redis or a Redis Cluster of its own, and its counters."""

    def __init__(self, kind: str, root: Path) -> None:
        from node.embedded.redis_cluster import LocalRedisCluster, LocalRedisServer

        self.kind = kind
        self.cluster: LocalRedisCluster | None = None
        self.server: LocalRedisServer | None = None
        if kind == "cluster":
            self.cluster = LocalRedisCluster(root, masters=3, replicas=1)
        else:
            self.server = LocalRedisServer(root / "single", cluster=False)

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        try:
            if self.cluster is not None:
                yield self.cluster.start()
            else:
                assert self.server is not None
                self.server.start()
                yield f"redis://127.0.0.1:{self.server.port}/0"
        finally:
            if self.cluster is not None:
                self.cluster.stop()
            elif self.server is not None:
                self.server.stop()

    def servers(self) -> list[Any]:
        return self.cluster.members if self.cluster is not None else [self.server]

    def snapshot(self) -> dict[int, dict[str, Any]]:
        """Per server (by port): role, calls per command, CPU seconds."""
        out = {}
        for server in self.servers():
            stats = server.info("commandstats")
            cpu = server.info("cpu")
            out[server.port] = {
                "role": server.info("replication").get("role", "master"),
                "calls": {
                    name.removeprefix("cmdstat_"): int(v["calls"])
                    for name, v in stats.items()
                    if isinstance(v, dict)
                },
                "cpu": float(cpu.get("used_cpu_user", 0)) + float(cpu.get("used_cpu_sys", 0)),
            }
        return out


def redis_figures(
    before: dict[int, dict[str, Any]],
    after: dict[int, dict[str, Any]],
    messages: int,
    idle: dict[int, float] | None = None,
    window: float = 0.0,
) -> dict[str, Any]:
    """Per delivered message: calls and CPU on the masters (total and per shard), CPU on the
    replicas, and the commands that make up the calls. With `idle` (CPU seconds per second of
    each server with the nodes connected and no traffic: heartbeats, lease renewals, the cluster
    bus) the `_net` figures leave that background out of the `window` (seconds)."""
    per = max(1, messages)
    masters = [p for p in after if after[p]["role"] == "master"]
    replicas = [p for p in after if after[p]["role"] != "master"]

    def calls(port: int) -> dict[str, int]:
        old = before.get(port, {}).get("calls", {})
        return {c: n - old.get(c, 0) for c, n in after[port]["calls"].items() if n - old.get(c, 0)}

    def cpu(ports: list[int], net: bool = False) -> float:
        used = sum(after[p]["cpu"] - before.get(p, {}).get("cpu", 0.0) for p in ports)
        if net and idle is not None:
            used -= sum(idle.get(p, 0.0) * window for p in ports)
        return float(max(0.0, used))

    by_command: dict[str, int] = {}
    shard_calls = []
    for port in masters:
        mine = calls(port)
        shard_calls.append(round(sum(mine.values()) / per, 2))
        for command, n in mine.items():
            by_command[command] = by_command.get(command, 0) + n
    top = sorted(by_command.items(), key=lambda kv: -kv[1])
    return {
        "redis_shards": len(masters),
        "redis_calls_per_msg": round(sum(by_command.values()) / per, 2),
        "redis_cpu_us_per_msg": round(cpu(masters) * 1e6 / per, 1),
        "redis_cpu_us_per_msg_net": round(cpu(masters, net=True) * 1e6 / per, 1),
        "redis_replica_cpu_us_per_msg": round(cpu(replicas) * 1e6 / per, 1) if replicas else None,
        "redis_replica_cpu_us_per_msg_net": (
            round(cpu(replicas, net=True) * 1e6 / per, 1) if replicas else None
        ),
        "redis_idle_cpu_ms_per_s": round(sum(idle.values()) * 1000, 2) if idle else None,
        "redis_calls_per_msg_by_shard": sorted(shard_calls, reverse=True),
        "redis_commands_per_msg": {c: round(n / per, 3) for c, n in top if n / per >= 0.01},
    }


class Postgres:
    """The PostgreSQL the nodes use: the given server or an embedded one; a fresh database per
    run."""

    def __init__(self, url: str | None, root: Path) -> None:
        self.url = url
        self.root = root
        self.embedded: Any = None

    def __enter__(self) -> Postgres:
        if self.url is None:
            from node.embedded import EmbeddedPostgres

            self.embedded = EmbeddedPostgres(self.root / "postgres")
            self.url = self.embedded.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.embedded is not None:
            self.embedded.stop()

    def pids(self) -> list[int]:
        if self.embedded is not None and self.embedded.pid:
            return [self.embedded.pid]
        return listener_pids(self.url or "")

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        name = f"bench_{secrets.token_hex(5)}"
        asyncio.run(self._admin(f'CREATE DATABASE "{name}"'))
        try:
            yield with_path(self.url or "", "/" + name)
        finally:
            with contextlib.suppress(Exception):
                asyncio.run(self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    async def _admin(self, sql: str) -> None:
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()


def run_one(
    a: argparse.Namespace, kind: str, nodes: int, rate: float, pg: Postgres, logdir: Path
) -> dict[str, Any]:
    """One configuration, once: fresh Redis, database and nodes; the JSON line."""
    with tempfile.TemporaryDirectory(prefix="msgr-rediscost-") as tmp:
        redis = RedisUnderTest(kind, Path(tmp))
        with redis.running() as redis_url, pg.database() as db:
            group = ServerGroup(logdir)
            try:
                urls = group.start_nodes(nodes, db, redis_url, a.env)
                group.wait_healthy()
                idle = _idle_cpu(redis)
                line, before, after = _measure(a, urls, group.pids(), redis, pg, rate)
            finally:
                group.stop()
            line["server_log_errors"] = group.log_errors()
    line.update({"redis": kind, "nodes": nodes})
    line.update(redis_figures(before, after, line["delivered"], idle, line.pop("window_s")))
    return line


def _idle_cpu(redis: RedisUnderTest, seconds: float = 3.0) -> dict[int, float]:
    """CPU seconds per second of each Redis server with the nodes up and no traffic."""
    first = redis.snapshot()
    started = time.monotonic()
    time.sleep(seconds)
    last = redis.snapshot()
    took = time.monotonic() - started
    return {port: (last[port]["cpu"] - first[port]["cpu"]) / took for port in last}


def _measure(
    a: argparse.Namespace,
    urls: list[str],
    node_pids: list[int],
    redis: RedisUnderTest,
    pg: Postgres,
    rate: float,
) -> tuple[dict[str, Any], dict[int, Any], dict[int, Any]]:
    workers = max(1, min(a.workers, a.pairs))
    tag = secrets.token_hex(3)
    specs = [
        Spec(
            mode="node",
            send_url=urls[0],
            recv_url=urls[1 + w % (len(urls) - 1)],
            pairs=[i for i in range(a.pairs) if i % workers == w],
            total_pairs=a.pairs,
            messages=a.messages,
            rate=rate,
            tag=tag,
            drain_timeout=a.drain_timeout,
            max_time=a.max_time,
            settle=a.settle,
        )
        for w in range(workers)
    ]
    with Workers(worker_main, specs, fd_limit=4 * a.pairs + 1024) as ws:
        setup = ws.gather("setup", 2 * a.max_time + 60)
        ws.release()
        ready = ws.gather("ready", a.max_time + 60)
        before = redis.snapshot()
        started = time.monotonic()
        node_cpu0, pg_cpu0 = cpu_seconds(node_pids), cpu_seconds(pg.pids())
        ws.release(now_ns() + 200_000_000)
        results = ws.gather("done", a.max_time + 120)
        node_cpu, pg_cpu = cpu_seconds(node_pids) - node_cpu0, cpu_seconds(pg.pids()) - pg_cpu0
        after = redis.snapshot()
        window = time.monotonic() - started
    base = {
        "kind": "rediscost",
        "target": "node",
        "topology": "cross",
        "rate_offered": rate,
        "pairs": a.pairs,
        "messages": a.messages,
        "workers": workers,
        "label": a.label,
        "setup_s": round(max(r["setup_s"] for r in setup), 2),
        "connect_s": round(max(r["connect_s"] for r in ready), 2),
    }
    line = report.pairs_line(report.merge(results), base, {"server_cpu_s": round(node_cpu, 2)})
    delivered = max(1, line["delivered"])
    line["postgres_cpu_ms_per_msg"] = round(pg_cpu * 1000 / delivered, 3) if pg.pids() else None
    line["window_s"] = window
    return line, before, after


def run(
    a: argparse.Namespace,
    say: Callable[[str], None],
    emit: Callable[[argparse.Namespace, dict[str, Any]], None],
    logdir: Path,
) -> list[dict[str, Any]]:
    """Every (Redis kind, node count, rate), `--repeat` times; medians."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="msgr-rediscost-pg-") as tmp:
        with Postgres(a.database_url, Path(tmp)) as pg:
            for kind in REDIS_KINDS:
                for nodes in a.node_counts:
                    for rate in a.rates:
                        runs = []
                        for r in range(a.repeat):
                            shown = f"{rate:g}" if rate else "max"
                            try:
                                line = run_one(a, kind, nodes, rate, pg, logdir)
                            except RuntimeError as e:
                                say(f"{kind} {nodes} nodes rate={shown} FAILED: {e}")
                                runs.append({"kind": "rediscost", "redis": kind, "error": str(e)})
                                continue
                            say(
                                f"{kind} redis, {nodes} nodes, rate={shown} run {r + 1}/"
                                f"{a.repeat}: {line['delivered']}/{line['planned']} delivered, "
                                f"{line['redis_calls_per_msg']} Redis calls and "
                                f"{line['redis_cpu_us_per_msg']} us Redis CPU per message"
                            )
                            runs.append(line)
                        lines.append(report.median_line(runs))
                        emit(a, lines[-1])
    return lines


def table(lines: list[dict[str, Any]]) -> str:
    """Per message, side by side."""
    head = (
        "redis   nodes  rate   msgs/s  p50 ms  lost dup  calls/msg  by shard         "
        "redis us/msg (net)  replica us/msg (net)  node ms/msg  pg ms/msg"
    )
    rows = [head, "-" * len(head)]
    for ln in lines:
        if "error" in ln and "delivered" not in ln:
            rows.append(f"{ln.get('redis', '?'):7} failed: {ln['error'][:80]}")
            continue
        rate = f"{ln['rate_offered']:g}" if ln["rate_offered"] else "max"
        shards = "/".join(f"{c:g}" for c in ln["redis_calls_per_msg_by_shard"])
        replica = ln["redis_replica_cpu_us_per_msg"]
        rows.append(
            f"{ln['redis']:7} {ln['nodes']:5}  {rate:5} {ln['msgs_per_s']:8,.0f} "
            f"{ln['p50_ms'] or 0:7.1f} {ln['lost']:5} {ln['dup']:3}  "
            f"{ln['redis_calls_per_msg']:9}  {shards:16} "
            f"{ln['redis_cpu_us_per_msg']:8} ({ln['redis_cpu_us_per_msg_net']:6}) "
            f"{'-' if replica is None else replica:>12} "
            f"({'-' if replica is None else ln['redis_replica_cpu_us_per_msg_net']:>6}) "
            f"{ln['server_cpu_ms_per_msg'] or 0:12} "
            f"{ln['postgres_cpu_ms_per_msg'] or 0:10}"
        )
    return "\n".join(rows)
