"""The parent side of the 'pairs' workload (and of 'connections', which is pairs at scale).

`run_pairs`: fresh servers, K workers (loadtest/workload.py) stepped through their phases: setup
over REST → the parent reads node RSS → all sockets open → node RSS again → one start time t0 →
sends and drain → the parent reads node CPU. Returns the JSON line and the RSS samples.

'connections' (`run_connections`): N = 2P sockets (P pairs, each pair a direct chat), spread
over several worker processes and loopback source addresses, a steady rate R for D seconds
(M = ceil(R·D/P) messages per sender); the line adds node RSS per connection (after all opened
minus before), the time to open them all, and dropped connections.
"""

from __future__ import annotations

import math
import secrets
import time
from typing import Any

from loadtest import profiling, report
from loadtest.client import now_ns, source_addrs
from loadtest.harness import Workers
from loadtest.procstats import (
    Sampler,
    cpu_seconds,
    delta,
    hwm_bytes,
    listen_overflows,
    rss_bytes,
)
from loadtest.servers import Target
from loadtest.workload import Spec, worker_main

MB = 1024 * 1024
CONNS_PER_SOURCE = 10_000  # well under the 28k ephemeral ports of one source address


def run_pairs(
    a: Any,
    target: Target,
    topology: str,
    rate: float,
    messages: int,
    interval: float,
    *,
    pairs: int | None = None,
    workers: int | None = None,
    kind: str = "pairs",
) -> tuple[dict[str, Any], list[tuple[float, int]]]:
    """Fresh servers, K workers, measured phase; the run's JSON line and RSS samples."""
    P = pairs or a.pairs
    K = max(1, min(workers or a.workers, P))
    sources: list[list[str]] = [[] for _ in range(K)]
    if kind == "connections":  # each worker its own source addresses
        per = max(1, math.ceil(2 * P / K / CONNS_PER_SOURCE))
        addrs = source_addrs(per * K)
        sources = [addrs[w * per : (w + 1) * per] for w in range(K)]
    with target.servers(2 if topology == "cross" else 1) as srv:
        urls, spids = srv.urls, srv.pids
        tag = secrets.token_hex(3)
        specs = [
            Spec(
                mode="echo" if a.echo else "node",
                send_url=urls[0],
                recv_url=urls[1] if topology == "cross" else urls[0],
                pairs=[i for i in range(P) if i % K == w],
                total_pairs=P,
                messages=messages,
                rate=rate,
                tag=tag,
                drain_timeout=a.drain_timeout,
                max_time=a.max_time,
                settle=a.settle,
                connect_concurrency=a.connect_concurrency,
                source_addrs=sources[w],
            )
            for w in range(K)
        ]
        fd_limit = 2 * math.ceil(2 * P / K) + 1024
        with Workers(worker_main, specs, fd_limit) as ws:
            setup = ws.gather("setup", 2 * a.max_time + 60)
            rss_before = rss_bytes(spids)
            t_connect = time.monotonic()
            overflows0 = listen_overflows()
            ws.release()
            ready = ws.gather("ready", a.max_time + 60)
            overflows = delta(listen_overflows(), overflows0)
            connect_all_s = time.monotonic() - t_connect - a.settle
            rss_after = rss_bytes(spids)
            ipids = target.infra_pids()
            scpu0, icpu0 = cpu_seconds(spids), cpu_seconds(ipids)
            sampler = Sampler(spids, interval)
            sampler.start()
            prof = profiling.start(a.profile, spids, f"{kind}-{topology}-{rate:g}")
            t0 = now_ns() + 200_000_000
            ws.release(t0)
            results = ws.gather("done", a.max_time + 120)
            profiling.finish(prof)
            scpu, icpu = cpu_seconds(spids) - scpu0, cpu_seconds(ipids) - icpu0
            samples = sampler.stop()
            hwm = hwm_bytes(spids)
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
            "kind": kind,
            "target": "echo" if a.echo else ("url" if a.urls else "node"),
            "topology": topology,
            "rate_offered": rate,
            "pairs": P,
            "messages": messages,
            "workers": K,
            "label": a.label,
            "setup_s": round(max(r["setup_s"] for r in setup), 2),
            "connect_s": round(max(r["connect_s"] for r in ready), 2),
        }
        merged = report.merge(results)
        line = report.pairs_line(merged, base, server)
        if kind == "connections":
            first, warm = merged.get("lat_first", []), merged.get("lat_warm", [])
            line.update(
                {
                    # latency of each chat's first message (its actor starts: lease, fencing
                    # epoch, members) apart from the later ones (the chat is warm)
                    "p50_first_in_chat_ms": report.ms(report.pct(first, 50)),
                    "p99_first_in_chat_ms": report.ms(report.pct(first, 99)),
                    "p50_warm_ms": report.ms(report.pct(warm, 50)),
                    "p99_warm_ms": report.ms(report.pct(warm, 99)),
                    "connections": 2 * P,
                    "source_addrs": sum(len(s) for s in sources),
                    "connect_all_s": round(connect_all_s, 2),
                    "listen_overflows": overflows,
                    "rss_before_connect_mb": round(rss_before / MB, 1),
                    "rss_after_connect_mb": round(rss_after / MB, 1),
                    "rss_per_conn_kib": round((rss_after - rss_before) / 1024 / (2 * P), 1),
                }
            )
    line["server_log_errors"] = srv.log_errors
    return line, [(t - t0 / 1e9, b) for t, b in samples]  # seconds since t0


def run_connections(a: Any, target: Target, topology: str) -> dict[str, Any]:
    """N sockets (N/2 pairs), `--rate` msgs/s among them for `--duration` seconds."""
    pairs = max(1, a.connections // 2)
    rate = a.rates[0] if a.rates else 1000.0
    messages = max(1, math.ceil(rate * a.duration / pairs)) if rate else a.messages
    line, _ = run_pairs(
        a,
        target,
        topology,
        rate,
        messages,
        a.sample_interval or 1.0,
        pairs=pairs,
        workers=a.workers,
        kind="connections",
    )
    line["duration_s"] = a.duration
    return line
