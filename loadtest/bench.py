"""`python -m loadtest.bench` (`./dev bench`): our own benchmark of the node. See loadtest/BENCH.md.

Default: the 'pairs' workload (P=50 pairs, M=200 messages each) in topologies `single` and
`cross`, flat out (R=0) and at 1000 msgs/s, against fresh node processes on embedded PostgreSQL
and Redis; prints a table and one JSON line per configuration. Other workloads (`--workload`):
groups (fan-out), connections (many sockets at a steady rate), storm (devices with a backlog
reconnecting after their node is SIGKILLed), presence (a connect storm of a big group and many
direct chats). Other modes: `--idle N` (RSS per idle WebSocket, node and bare aiohttp), `--echo`
(the load generator's ceiling against loadtest/echo.py), `--soak S`.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest import report, tables
from loadtest.groups import run_groups
from loadtest.harness import raise_fd_limit
from loadtest.idle import run_idle
from loadtest.pairs import run_connections, run_pairs
from loadtest.presence import run_presence
from loadtest.servers import Target
from loadtest.storm import run_storm

WORKLOADS = ("pairs", "groups", "connections", "storm", "presence")

MB = 1024 * 1024


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def csv(text: str, kind: type = str) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w = ap.add_argument_group("workload")
    w.add_argument(
        "--workload",
        choices=WORKLOADS,
        default="pairs",
        help="load shape (default pairs); see loadtest/BENCH.md",
    )
    w.add_argument(
        "--topologies",
        default=None,
        help="comma list of single,cross (default both; --soak: single)",
    )
    w.add_argument(
        "--rates",
        default=None,
        help="comma list of aggregate msgs/s, 0 = flat out (default 0,1000; --echo: 0)",
    )
    w.add_argument("--rate", type=float, default=None, help="one rate (shorthand for --rates R)")
    w.add_argument("--pairs", type=int, default=50, help="sender/receiver pairs P (default 50)")
    w.add_argument("--messages", type=int, default=200, help="messages per sender M (default 200)")
    w.add_argument(
        "--workers",
        type=int,
        default=None,
        help="load-generator processes K (default 2; connections: one per 5,000 sockets)",
    )
    w.add_argument("--repeat", type=int, default=1, help="runs per configuration; medians reported")
    w.add_argument(
        "--drain-timeout",
        type=float,
        default=5.0,
        help="s without progress before the remaining messages count as lost",
    )
    w.add_argument("--max-time", type=float, default=300.0, help="cap (s) on each phase")
    w.add_argument("--settle", type=float, default=0.5, help="s between connecting and sending")
    w.add_argument(
        "--connect-concurrency",
        type=int,
        default=32,
        help="sockets a worker opens at once (pairs, connections; default 32)",
    )
    g = ap.add_argument_group("groups / presence")
    g.add_argument("--groups", type=int, default=2, help="groups G (default 2)")
    g.add_argument(
        "--group-size",
        type=int,
        default=None,
        help="members S, creator included, at most 1001 (groups: 100; presence: 1000)",
    )
    g.add_argument("--group-senders", type=int, default=1, help="senders per group (default 1)")
    g.add_argument(
        "--direct-users",
        type=int,
        default=10_000,
        help="presence: users in direct chats, in pairs (default 10000)",
    )
    g.add_argument(
        "--quiet",
        type=float,
        default=3.0,
        help="presence: s without a presence frame that end the count (default 3)",
    )
    c = ap.add_argument_group("connections")
    c.add_argument("--connections", type=int, default=2000, help="sockets N (default 2000)")
    c.add_argument("--duration", type=float, default=10.0, help="s of traffic (default 10)")
    s_ = ap.add_argument_group("storm")
    s_.add_argument("--devices", type=int, default=1000, help="devices N (default 1000)")
    s_.add_argument("--backlog", type=int, default=10, help="unacked messages each (default 10)")
    s_.add_argument("--acked", type=int, default=2, help="acked before the kill (default 2)")
    s_.add_argument("--per-sender", type=int, default=100, help="devices per sender (default 100)")
    s_.add_argument(
        "--stats-wait",
        type=float,
        default=11.0,
        help="s of quiet before reading pg_stat_database (PostgreSQL flushes idle backends' "
        "counters every 10 s; default 11)",
    )
    m = ap.add_argument_group("modes")
    m.add_argument(
        "--idle",
        type=int,
        nargs="?",
        const=2000,
        default=None,
        metavar="N",
        help="open N idle WebSockets instead; node RSS before/after (default N 2000)",
    )
    m.add_argument(
        "--idle-devices",
        type=int,
        default=1,
        help="devices per user in --idle (N/D users; default 1)",
    )
    m.add_argument(
        "--echo",
        action="store_true",
        help="run the workload against loadtest/echo.py: the load generator's ceiling",
    )
    m.add_argument(
        "--redis-cluster",
        action="store_true",
        help="Redis cost per message, one Redis vs a Redis Cluster (loadtest/rediscost.py)",
    )
    m.add_argument("--nodes", default="2,3", help="with --redis-cluster: node counts (default 2,3)")
    m.add_argument(
        "--soak",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send continuously at --rate for SECONDS, sampling node RSS",
    )
    m.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="soak warm-up s before the ±10%% RSS check (default min(60, 20%%))",
    )
    m.add_argument(
        "--sample-interval",
        type=float,
        default=None,
        help="s between RSS samples (default 0.5; soak 5)",
    )
    t = ap.add_argument_group("target")
    t.add_argument("--url", default=None, help="running node(s): http://h:p[,http://h2:p]")
    t.add_argument("--server-pids", default="", help="with --url: node PIDs for CPU/RSS")
    t.add_argument(
        "--infra-pids",
        default="",
        help="with --url: PostgreSQL/Redis PIDs for infra CPU (children included)",
    )
    t.add_argument("--database-url", default=None, help="PostgreSQL server (fresh db per run)")
    t.add_argument("--redis-url", default=None, help="Redis DB (flushed before every run)")
    t.add_argument(
        "--node-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for started nodes (repeatable)",
    )
    t.add_argument("--logs", default=None, help="keep node logs in this dir (default: temp)")
    o = ap.add_argument_group("output")
    o.add_argument("--out", default=None, help="append the JSON lines to FILE")
    o.add_argument("--label", default="", help="free text copied into every JSON line")
    o.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help=(
            "py-spy the nodes during the measured phase (pairs, connections, groups, storm)"
            " into DIR"
        ),
    )
    a = ap.parse_args(argv)
    if a.rate is not None:
        a.rates = str(a.rate)
    if a.soak is not None and not a.rate:
        ap.error("--soak needs --rate R > 0")
    one_topology = a.soak or a.echo or a.workload in ("connections", "storm", "presence")
    a.topologies = csv(a.topologies or ("single" if one_topology else "single,cross"))
    if set(a.topologies) - {"single", "cross"}:
        ap.error("--topologies: single and/or cross")
    default_rates = {"groups": "0", "connections": "1000", "storm": "0", "presence": "0"}
    a.rates = csv(a.rates or ("0" if a.echo else default_rates.get(a.workload, "0,1000")), float)
    if a.group_size is None:
        a.group_size = 1000 if a.workload == "presence" else 100
    if not 2 <= a.group_size <= 1001:
        ap.error("--group-size: 2 to 1001")
    if a.workers is None:
        a.workers = math.ceil(a.connections / 5000) if a.workload == "connections" else 2
        a.workers = max(2, a.workers)
    if (a.echo or a.soak) and a.workload != "pairs":
        ap.error("--echo and --soak are modes of the pairs workload")
    a.urls = csv(a.url) if a.url else []
    a.server_pid_list = csv(a.server_pids, int)
    a.infra_pid_list = csv(a.infra_pids, int)
    a.env = dict(kv.split("=", 1) for kv in a.node_env)
    a.node_counts = csv(a.nodes, int)
    if a.redis_cluster and (min(a.node_counts) < 2 or a.urls or a.redis_url or a.echo):
        ap.error("--redis-cluster starts its own Redis and at least 2 nodes per run")
    return a


# ------------------------------------------------------------------------ modes
def run_matrix(a: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    """Every configuration (topology x rate) of the chosen workload, `--repeat` times each."""
    lines = []
    for topology in a.topologies:
        for rate in a.rates if a.workload in ("pairs", "groups") else [a.rates[0]]:
            runs = []
            for r in range(a.repeat):
                shown = f"{rate:g}" if rate else "max"
                try:
                    line = run_one(a, target, topology, rate)
                except RuntimeError as e:  # a node that did not start, a failed worker
                    say(f"{a.workload} {topology} rate={shown} run {r + 1}/{a.repeat} FAILED: {e}")
                    line = {
                        "kind": "soak" if a.soak else a.workload,
                        "label": a.label,
                        "topology": topology,
                        "rate_offered": rate,
                        "error": str(e)[:1000],
                    }
                    runs.append(line)
                    continue
                say(f"{a.workload} {topology} rate={shown} run {r + 1}/{a.repeat}: {summary(line)}")
                runs.append(line)
            lines.append(report.median_line(runs))
            emit(a, lines[-1])
    return lines


def run_one(a: argparse.Namespace, target: Target, topology: str, rate: float) -> dict[str, Any]:
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "groups": lambda: run_groups(a, target, topology, rate),
        "connections": lambda: run_connections(a, target, topology),
        "storm": lambda: run_storm(a, target),
        "presence": lambda: run_presence(a, target),
    }
    if a.workload in runners:
        return runners[a.workload]()
    if a.soak:
        messages = math.ceil(a.rate * a.soak / a.pairs)
        warmup = a.warmup if a.warmup is not None else min(60.0, 0.2 * a.soak)
        a.max_time = max(a.max_time, a.soak + 60)
        line, samples = run_pairs(a, target, topology, rate, messages, a.sample_interval or 5.0)
        line.update(report.soak_fields(samples, a.soak, warmup))
        return line
    line, _ = run_pairs(a, target, topology, rate, a.messages, a.sample_interval or 0.5)
    return line


def summary(line: dict[str, Any]) -> str:
    """One progress line for stderr."""
    keys = {
        "pairs": ("delivered", "msgs_per_s", "p50_ms", "p99_ms"),
        "soak": ("delivered", "msgs_per_s", "p50_ms", "p99_ms"),
        "groups": ("deliveries", "deliveries_per_s", "p50_ms", "p99_ms"),
        "connections": ("connections", "connect_all_s", "rss_per_conn_kib", "p99_ms"),
        "storm": ("devices", "caught_up_s", "pg_xacts_per_device"),
        "presence": ("all_ready_s", "presence_frames", "presence_update_failed"),
    }[line["kind"]]
    shown = ", ".join(f"{k} {line.get(k)}" for k in (*keys, "lost", "dup", "dropped"))
    return f"{line['target']}: {shown}"


def emit(a: argparse.Namespace, line: dict[str, Any]) -> None:
    if a.out:
        with open(a.out, "a") as f:
            f.write(report.dumps(line) + "\n")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    sockets = {
        "pairs": 2 * a.pairs,
        "groups": a.groups * a.group_size,
        "connections": a.connections,
        "storm": a.devices + a.devices // max(1, a.per_sender) + 1,
        "presence": a.group_size + a.direct_users,
    }[a.workload]
    need = 2 * max(a.idle or 0, sockets) + 4096
    got = raise_fd_limit(need)  # inherited by the nodes too
    if got < need:
        say(
            f"RLIMIT_NOFILE: {got} file descriptors per process at most here (hard limit; "
            f"raising it needs CAP_SYS_RESOURCE): a node can hold fewer sockets than that"
        )

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)  # so that `finally` stops the servers
    with tempfile.TemporaryDirectory(prefix="msgr-bench-logs-") as tmp:
        logdir = Path(a.logs) if a.logs else Path(tmp)
        logdir.mkdir(parents=True, exist_ok=True)
        if a.redis_cluster:
            from loadtest import rediscost

            lines = rediscost.run(a, say, emit, logdir)
            print(rediscost.table(lines))
            for line in lines:
                print(report.dumps(line))
            return 1 if any("error" in line for line in lines) else 0
        try:
            with Target(
                urls=a.urls,
                server_pids=a.server_pid_list,
                infra_pids=a.infra_pid_list,
                database_url=a.database_url,
                redis_url=a.redis_url,
                echo=a.echo,
                node_env=a.env,
                logdir=logdir,
                say=say,
            ) as target:
                if a.idle:
                    lines = run_idle(a, target, say)
                    for line in lines:
                        emit(a, line)
                else:
                    lines = run_matrix(a, target)
        except KeyboardInterrupt:
            say("interrupted")
            return 130
    print(tables.table(lines))
    for line in lines:
        print(report.dumps(line))
    return 1 if any("error" in line for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
