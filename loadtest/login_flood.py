"""`python -m loadtest.login_flood`: a real user's login while a flood of bad logins runs.

One fresh node process (bcrypt cost `--cost`, 12 by default as in production, the login and
registration throttle on but its attempt limits raised out of the way, so what is measured is
the node's hashing gate). First the good login alone, `--quiet` times; then `--flooders`
clients on `--addresses` loopback source addresses (127.0.5.x) send bad logins for one account
back to back, doing as a 429 says (`Retry-After`); while they run, the good login from
127.0.0.1 is timed `--loaded` times. Prints a table and one JSON line: latencies, and how the
flood was answered (401: hashed and refused; 429: shed before any hash).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.servers import Infra, ServerGroup

PASSWORD = "correct horse battery"


def say(msg: str) -> None:
    print(f"[login-flood] {msg}", file=sys.stderr, flush=True)


async def login(http: aiohttp.ClientSession, base: str, username: str, password: str) -> int:
    body = {"username": username, "password": password}
    async with http.post(f"{base}/api/v1/auth/login", json=body) as r:
        await r.read()
        if r.status == 429:
            await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
        return r.status


async def measure(base: str, args: argparse.Namespace) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        names = [f"u{uuid.uuid4().hex[:10]}" for _ in range(2)]
        for name in names:
            async with http.post(
                f"{base}/api/v1/auth/register", json={"username": name, "password": PASSWORD}
            ) as r:
                assert r.status == 201, await r.text()
        user, victim = names

        async def timed() -> float:
            started = time.monotonic()
            status = await login(http, base, user, PASSWORD)
            assert status == 200, status
            return time.monotonic() - started

        quiet = [await timed() for _ in range(args.quiet)]
        answered: dict[int, int] = {}
        stop = asyncio.Event()

        async def flooder(client: aiohttp.ClientSession) -> None:
            while not stop.is_set():
                status = await login(client, base, victim, "wrong password")
                answered[status] = answered.get(status, 0) + 1

        clients = [
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(local_addr=(f"127.0.5.{n + 1}", 0))
            )
            for n in range(args.addresses)
        ]
        per_address = max(1, args.flooders // args.addresses)
        flood = [asyncio.create_task(flooder(c)) for c in clients for _ in range(per_address)]
        try:
            await asyncio.sleep(args.warmup)  # the flood under way before measuring
            loaded = [await timed() for _ in range(args.loaded)]
        finally:
            stop.set()
            await asyncio.gather(*flood)
            for client in clients:
                await client.close()
    return {
        "workload": "login_flood",
        "bcrypt_cost": args.cost,
        "flooders": per_address * args.addresses,
        "addresses": args.addresses,
        "quiet_median_s": round(statistics.median(quiet), 3),
        "loaded_median_s": round(statistics.median(loaded), 3),
        "loaded_max_s": round(max(loaded), 3),
        "flood_answers": {str(k): v for k, v in sorted(answered.items())},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtest.login_flood", description=__doc__)
    ap.add_argument("--cost", type=int, default=12, help="bcrypt cost (default 12)")
    ap.add_argument("--flooders", type=int, default=50, help="concurrent bad logins (default 50)")
    ap.add_argument("--addresses", type=int, default=5, help="their source addresses (default 5)")
    ap.add_argument("--quiet", type=int, default=3, help="good logins before the flood")
    ap.add_argument("--loaded", type=int, default=5, help="good logins during the flood")
    ap.add_argument("--warmup", type=float, default=3.0, help="flood seconds before measuring")
    ap.add_argument(
        "--database-url",
        default=os.environ.get("MESSENGER_BENCH_DATABASE_URL"),
        help="a PostgreSQL server to make a fresh database on (default: embedded)",
    )
    args = ap.parse_args(argv)
    infra = Infra(args.database_url, None).start()
    try:
        with tempfile.TemporaryDirectory() as logdir:
            group = ServerGroup(Path(logdir))
            database = infra.fresh_database()
            assert infra.redis_url
            try:
                group.start_nodes(
                    1,
                    database,
                    infra.redis_url,
                    {
                        "MESSENGER_BCRYPT_ROUNDS": str(args.cost),
                        "MESSENGER_AUTH_THROTTLE": "true",
                        "MESSENGER_LOGIN_LIMIT_ACCOUNT": "1000000/minute",
                        "MESSENGER_LOGIN_LIMIT_ADDRESS": "1000000/minute",
                    },
                )
                group.wait_healthy()
                say(f"node up at {group.urls[0]}; bcrypt cost {args.cost}")
                row = asyncio.run(measure(group.urls[0], args))
            finally:
                group.stop()
                with contextlib.suppress(Exception):
                    infra.drop_database(database)
    finally:
        infra.stop()
    print("| bcrypt cost | flood | good login alone (median) | under the flood (median / max) |")
    print("| ---: | --- | ---: | ---: |")
    print(
        f"| {row['bcrypt_cost']} | {row['flooders']} from {row['addresses']} addresses |"
        f" {row['quiet_median_s']} s | {row['loaded_median_s']} s / {row['loaded_max_s']} s |"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
