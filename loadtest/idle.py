"""Idle mode (`--idle N`): RSS per idle WebSocket, the node's and a bare aiohttp server's, measured
in the same run so that the node's own share per socket is their difference.

For each server: open and close 10 warm-up sockets (one-off costs: lazy imports, first
allocations of the WebSocket path), wait 1 s, read RSS, open N sockets (node: N/D users with D
devices each, each socket waits for `ready`; bare: loadtest/echo.py, which sends a `ready` frame
too), wait 2 s, read RSS again. The sockets come from one process, spread over loopback source
addresses. The bare server is the echo relay: aiohttp + uvloop, one handler coroutine per socket
and a dict of sockets, nothing else.
"""

from __future__ import annotations

import asyncio
import functools
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from loadtest import report
from loadtest.client import Sessions, signup_many, source_addrs
from loadtest.procstats import rss_bytes
from loadtest.servers import ServerGroup, Target

MB = 1024 * 1024


async def open_idle(
    url: str, n: int, devices: int, rss: Callable[[], int], max_time: float, bare: bool
) -> dict[str, Any]:
    """N idle WebSockets; the server's RSS before and after."""
    users = [f"idle{secrets.token_hex(3)}u{u}" for u in range(math.ceil(n / max(1, devices)))]
    sessions = Sessions(source_addrs(math.ceil(n / 10_000)))
    tokens: dict[str, str] = {}
    sockets: list[aiohttp.ClientWebSocketResponse] = []
    try:
        t = time.monotonic()
        if not bare:
            async with asyncio.timeout(max_time):
                made = await signup_many(sessions.rest, url, users, 16)
            tokens = {u: tok for u, (_, tok) in made.items()}
        setup_s = time.monotonic() - t
        sem = asyncio.Semaphore(64)

        async def connect(c: int) -> None:
            user = users[c % len(users)]
            async with sem:
                http = sessions.pick(c)
                if bare:
                    ws = await http.ws_connect(f"{url}/ws?name=idle{c}")
                else:
                    ws = await http.ws_connect(
                        f"{url}/api/v1/ws?device_id=idle{c // len(users)}",
                        headers={"Authorization": f"Bearer {tokens[user]}"},
                    )
                sockets.append(ws)
                first = await ws.receive(timeout=30)
            if first.type != aiohttp.WSMsgType.TEXT or '"ready"' not in first.data:
                raise RuntimeError(f"{user}: expected a ready frame, got {first.data!r:.200}")

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
        await sessions.close()
    return {
        "connections": n,
        "users": 0 if bare else len(users),
        "devices_per_user": devices,
        "open_at_end": open_now,
        "setup_s": round(setup_s, 2),
        "connect_s": round(connect_s, 2),
        "rss_before_mb": round(before / MB, 1),
        "rss_after_mb": round(after / MB, 1),
        "rss_per_conn_kib": round((after - before) / 1024 / max(1, n), 2),
    }


def run_idle(a: Any, target: Target, say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Node, then (unless --url) the bare server, each with N idle sockets; per repeat."""
    nodes, bares = [], []
    for r in range(a.repeat):
        with target.servers(1) as srv:
            if not srv.pids:
                raise SystemExit("--idle against --url needs --server-pids")
            res = asyncio.run(
                open_idle(
                    srv.urls[0],
                    a.idle,
                    a.idle_devices,
                    functools.partial(rss_bytes, srv.pids),
                    a.max_time,
                    bare=False,
                )
            )
        node = {"kind": "idle", "server": "node", "target": "url" if a.urls else "node", **res}
        if not a.urls:
            group = ServerGroup(target.logdir)
            try:
                group.start_echo()
                group.wait_healthy()
                bare = asyncio.run(
                    open_idle(
                        group.urls[0],
                        a.idle,
                        1,
                        functools.partial(rss_bytes, group.pids()),
                        a.max_time,
                        bare=True,
                    )
                )
            finally:
                group.stop()
            bare_line = {"kind": "idle", "server": "bare-aiohttp", "target": "echo", **bare}
            bares.append({**bare_line, "label": a.label})
            node["bare_rss_per_conn_kib"] = bare["rss_per_conn_kib"]
            node["node_share_kib"] = round(res["rss_per_conn_kib"] - bare["rss_per_conn_kib"], 2)
        node.update(label=a.label, ts=time.strftime("%Y-%m-%dT%H:%M:%S"))
        say(
            f"idle run {r + 1}/{a.repeat}: {a.idle} sockets, node {res['rss_per_conn_kib']} KiB "
            f"each, bare aiohttp {node.get('bare_rss_per_conn_kib', '-')} KiB"
        )
        nodes.append(node)
    lines = [report.median_line(nodes)]
    if bares:
        lines.append(report.median_line(bares))
    return lines
