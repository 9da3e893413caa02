"""`python -m loadtest.bench` (`./dev bench`): our own benchmark of the node. See loadtest/BENCH.md.

Default: the 'pairs' workload (P=50 pairs, M=200 messages each) in topologies `single` and
`cross`, flat out (R=0) and at 1000 msgs/s, against fresh node processes on embedded PostgreSQL
and Redis; prints a table and one JSON line per configuration. Other modes: `--idle N` (RSS per
idle WebSocket), `--echo` (the load generator's ceiling against loadtest/echo.py), `--soak S`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import multiprocessing as mp
import resource
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest import report
from loadtest.servers import Sampler, Target, cpu_seconds, hwm_bytes, rss_bytes
from loadtest.workload import Spec, now_ns, signup, worker_entry

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
    w.add_argument("--workers", type=int, default=2, help="load-generator processes K (default 2)")
    w.add_argument("--repeat", type=int, default=1, help="runs per configuration; medians reported")
    w.add_argument(
        "--drain-timeout",
        type=float,
        default=5.0,
        help="s without progress before the remaining messages count as lost",
    )
    w.add_argument("--max-time", type=float, default=300.0, help="cap (s) on each phase")
    w.add_argument("--settle", type=float, default=0.5, help="s between connecting and sending")
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
    a = ap.parse_args(argv)
    if a.rate is not None:
        a.rates = str(a.rate)
    if a.soak is not None and not a.rate:
        ap.error("--soak needs --rate R > 0")
    a.topologies = csv(a.topologies or ("single" if a.soak or a.echo else "single,cross"))
    if set(a.topologies) - {"single", "cross"}:
        ap.error("--topologies: single and/or cross")
    a.rates = csv(a.rates or ("0" if a.echo else "0,1000"), float)
    a.urls = csv(a.url) if a.url else []
    a.server_pid_list = csv(a.server_pids, int)
    a.infra_pid_list = csv(a.infra_pids, int)
    a.env = dict(kv.split("=", 1) for kv in a.node_env)
    a.node_counts = csv(a.nodes, int)
    if a.redis_cluster and (min(a.node_counts) < 2 or a.urls or a.redis_url or a.echo):
        ap.error("--redis-cluster starts its own Redis and at least 2 nodes per run")
    return a


# ------------------------------------------------------------------------ one pairs run
def run_pairs(
    a: argparse.Namespace,
    target: Target,
    topology: str,
    rate: float,
    messages: int,
    interval: float,
) -> tuple[dict[str, Any], list[tuple[float, int]]]:
    """Fresh servers, K workers, measured phase; the run's JSON line and RSS samples."""
    with target.servers(2 if topology == "cross" else 1) as srv:
        urls, spids = srv.urls, srv.pids
        tag = secrets.token_hex(3)
        K = max(1, min(a.workers, a.pairs))
        specs = [
            Spec(
                mode="echo" if a.echo else "node",
                send_url=urls[0],
                recv_url=urls[1] if topology == "cross" else urls[0],
                pairs=[i for i in range(a.pairs) if i % K == w],
                total_pairs=a.pairs,
                messages=messages,
                rate=rate,
                tag=tag,
                drain_timeout=a.drain_timeout,
                max_time=a.max_time,
                settle=a.settle,
            )
            for w in range(K)
        ]
        ctx = mp.get_context("spawn")
        pipes, procs = [], []
        try:
            for spec in specs:
                parent, child = ctx.Pipe()
                p = ctx.Process(target=worker_entry, args=(spec, child), daemon=True)
                p.start()
                pipes.append(parent)
                procs.append(p)
            ready = [_expect(pc, "ready", 2 * a.max_time + 60) for pc in pipes]
            ipids = target.infra_pids()
            scpu0, icpu0 = cpu_seconds(spids), cpu_seconds(ipids)
            sampler = Sampler(spids, interval)
            sampler.start()
            t0 = now_ns() + 200_000_000
            for pc in pipes:
                pc.send(t0)
            results = [_expect(pc, "done", a.max_time + 120) for pc in pipes]
            scpu, icpu = cpu_seconds(spids) - scpu0, cpu_seconds(ipids) - icpu0
            samples = sampler.stop()
            hwm = hwm_bytes(spids)
            for pc in pipes:
                pc.send("close")
        finally:
            for p in procs:
                p.join(15)
                if p.is_alive():
                    p.kill()
        server: dict[str, Any] = {
            "server_cpu_s": None,
            "server_rss_peak_mb": None,
            "server_rss_end_mb": None,
        }
        if spids:
            peak = hwm if srv.fresh else max(b for _, b in samples)
            server = {
                "server_cpu_s": round(scpu, 2),
                "server_rss_peak_mb": round(peak / MB, 1),
                "server_rss_end_mb": round(samples[-1][1] / MB, 1),
            }
        server["infra_cpu_s"] = round(icpu, 2) if ipids else None
        base = {
            "kind": "pairs",
            "target": "echo" if a.echo else ("url" if a.urls else "node"),
            "topology": topology,
            "rate_offered": rate,
            "pairs": a.pairs,
            "messages": messages,
            "workers": K,
            "label": a.label,
            "setup_s": round(max(r["setup_s"] for r in ready), 2),
            "connect_s": round(max(r["connect_s"] for r in ready), 2),
        }
        line = report.pairs_line(report.merge(results), base, server)
    line["server_log_errors"] = srv.log_errors
    return line, [(t - t0 / 1e9, b) for t, b in samples]  # seconds since t0


def _expect(pc: Any, what: str, timeout: float) -> Any:
    if not pc.poll(timeout):
        raise RuntimeError(f"a worker sent no '{what}' within {timeout:.0f}s")
    kind, payload = pc.recv()
    if kind != what:
        raise RuntimeError(f"worker failed: {payload}")
    return payload


# ------------------------------------------------------------------------ modes
def run_matrix(a: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    lines = []
    for topology in a.topologies:
        for rate in a.rates:
            runs = []
            for r in range(a.repeat):
                shown = f"{rate:g}" if rate else "max"
                try:
                    if a.soak:
                        messages = math.ceil(a.rate * a.soak / a.pairs)
                        warmup = a.warmup if a.warmup is not None else min(60.0, 0.2 * a.soak)
                        a.max_time = max(a.max_time, a.soak + 60)
                        line, samples = run_pairs(
                            a, target, topology, rate, messages, a.sample_interval or 5.0
                        )
                        line.update(report.soak_fields(samples, a.soak, warmup))
                    else:
                        line, _ = run_pairs(
                            a, target, topology, rate, a.messages, a.sample_interval or 0.5
                        )
                except RuntimeError as e:  # a node that did not start, a failed worker
                    say(f"{topology} rate={shown} run {r + 1}/{a.repeat} FAILED: {e}")
                    line = {
                        "kind": "soak" if a.soak else "pairs",
                        "topology": topology,
                        "rate_offered": rate,
                        "error": str(e)[:1000],
                    }
                    runs.append(line)
                    continue
                say(
                    f"{line['target']} {topology} rate={shown} run {r + 1}/{a.repeat}: "
                    f"{line['delivered']}/{line['planned']} delivered, {line['msgs_per_s']:,.0f} "
                    f"msgs/s, p50 {line['p50_ms']} ms, lost {line['lost']}, dup {line['dup']}"
                )
                runs.append(line)
            lines.append(report.median_line(runs))
            emit(a, lines[-1])
    return lines


async def run_idle_clients(
    url: str, n: int, devices: int, rss: Any, max_time: float
) -> dict[str, Any]:
    """N idle WebSockets: N/D users with D devices each; the node's RSS before and after."""
    import aiohttp

    users = [f"idle{secrets.token_hex(3)}u{u}" for u in range(math.ceil(n / max(1, devices)))]
    tokens: dict[str, str] = {}
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def register(user: str) -> None:
            async with sem:
                tokens[user] = (await signup(http, url, user))[1]

        t = time.monotonic()
        async with asyncio.timeout(max_time):
            await asyncio.gather(*(register(u) for u in users))
        setup_s = time.monotonic() - t
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        sem = asyncio.Semaphore(64)

        async def connect(c: int) -> None:
            user = users[c % len(users)]
            async with sem:
                ws = await http.ws_connect(
                    f"{url}/api/v1/ws?device_id=idle{c // len(users)}",
                    headers={"Authorization": f"Bearer {tokens[user]}"},
                )
                sockets.append(ws)
                first = await ws.receive(timeout=30)
            if first.type != aiohttp.WSMsgType.TEXT or '"ready"' not in first.data:
                raise RuntimeError(f"{user}: expected a ready frame, got {first.data!r:.200}")

        try:
            # warm-up: a few sockets opened and closed first, so that one-off costs (lazy imports,
            # first allocations of the WebSocket path) are not charged to the idle connections
            await asyncio.gather(*(connect(c) for c in range(min(10, n))))
            await asyncio.gather(*(ws.close() for ws in sockets))
            sockets.clear()
            await asyncio.sleep(1.0)
            before = rss()
            t = time.monotonic()
            async with asyncio.timeout(max_time):
                await asyncio.gather(*(connect(c) for c in range(n)))
            connect_s = time.monotonic() - t
            await asyncio.sleep(2.0)  # presence and session set-up settle
            after = rss()
            open_now = sum(1 for ws in sockets if not ws.closed)
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "connections": n,
        "users": len(users),
        "devices_per_user": devices,
        "open_at_end": open_now,
        "setup_s": round(setup_s, 2),
        "connect_s": round(connect_s, 2),
        "rss_before": before,
        "rss_after": after,
    }


def run_idle(a: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    lines = []
    for r in range(a.repeat):
        with target.servers(1) as srv:
            urls, spids = srv.urls, srv.pids
            if not spids:
                raise SystemExit("--idle against --url needs --server-pids")
            res = asyncio.run(
                run_idle_clients(
                    urls[0], a.idle, a.idle_devices, functools.partial(rss_bytes, spids), a.max_time
                )
            )
            before, after = res.pop("rss_before"), res.pop("rss_after")
            line = {
                "kind": "idle",
                "target": "url" if a.urls else "node",
                "label": a.label,
                **res,
                "rss_before_mb": round(before / MB, 1),
                "rss_after_mb": round(after / MB, 1),
                "rss_per_conn_kib": round((after - before) / 1024 / max(1, a.idle), 1),
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            say(
                f"idle run {r + 1}/{a.repeat}: {line['connections']} sockets, "
                f"{line['rss_per_conn_kib']} KiB each"
            )
            lines.append(line)
    lines = [report.median_line(lines)]
    emit(a, lines[0])
    return lines


def emit(a: argparse.Namespace, line: dict[str, Any]) -> None:
    if a.out:
        with open(a.out, "a") as f:
            f.write(report.dumps(line) + "\n")


def raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard == resource.RLIM_INFINITY else min(hard, max(soft, need))
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    raise_fd_limit(2 * (a.idle or 0) + 4 * a.pairs + 1024)  # inherited by the nodes too

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
                lines = run_idle(a, target) if a.idle else run_matrix(a, target)
        except KeyboardInterrupt:
            say("interrupted")
            return 130
    print(report.table(lines))
    for line in lines:
        print(report.dumps(line))
    return 1 if any("error" in line for line in lines) else 0


if __name__ == "__main__":
    raise SystemExit(main())
