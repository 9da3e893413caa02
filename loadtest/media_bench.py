"""`python -m loadtest.media_bench`: upload and download throughput of large files, and the node's
memory while it streams them.

For each store (PostgreSQL, and S3 against a local moto server when `--s3`), a fresh node process
on a fresh database; for each concurrency C, C clients upload a file of `--mib` MiB each at the
same time (`--rounds` times), then download them all at the same time. Throughput is the bytes
moved over the wall time of a round (all C together); the node's RSS is sampled every 20 ms (its
process alone: PostgreSQL, Redis and moto are other processes). Prints one table and a JSON line
per configuration. Everything runs on this machine; the load generator shares its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from loadtest.procstats import Sampler, rss_bytes
from loadtest.servers import Infra, ServerGroup, free_port

MiB = 1024 * 1024


def say(msg: str) -> None:
    print(f"[media-bench] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import socket

        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


async def create_bucket(endpoint: str, name: str) -> None:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    ) as s3:
        await s3.create_bucket(Bucket=name)


async def account(http: aiohttp.ClientSession, base: str) -> str:
    body = {"username": f"b{uuid.uuid4().hex[:10]}", "password": "bench-password"}
    async with http.post(base + "/api/v1/auth/register", json=body) as r:
        assert r.status == 201, await r.text()
    async with http.post(base + "/api/v1/auth/login", json=body) as r:
        return str((await r.json())["access_token"])


async def upload(http: aiohttp.ClientSession, base: str, token: str, data: bytes) -> str:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    async with http.post(base + "/api/v1/media", data=io.BytesIO(data), headers=headers) as r:
        body = await r.json()
        assert r.status == 201, body
        return str(body["id"])


async def download(http: aiohttp.ClientSession, base: str, token: str, media_id: str) -> str:
    digest = hashlib.sha256()
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(f"{base}/api/v1/media/{media_id}", headers=headers) as r:
        assert r.status == 200, await r.text()
        async for chunk in r.content.iter_chunked(MiB):
            digest.update(chunk)
    return digest.hexdigest()


async def run_store(
    base: str, pid: int, sizes: int, concurrencies: list[int], rounds: int
) -> list[dict[str, Any]]:
    results = []
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        token = await account(http, base)
        files = [os.urandom(sizes) for _ in range(max(concurrencies))]
        digests = [hashlib.sha256(f).hexdigest() for f in files]
        for c in concurrencies:
            baseline = rss_bytes([pid])
            up_times, down_times, up_peak, down_peak = [], [], 0, 0
            for _ in range(rounds):
                sampler = Sampler([pid], 0.02)
                sampler.start()
                t0 = time.perf_counter()
                ids = await asyncio.gather(*(upload(http, base, token, files[i]) for i in range(c)))
                up_times.append(time.perf_counter() - t0)
                up_peak = max(up_peak, max(s for _, s in sampler.stop()))
                sampler = Sampler([pid], 0.02)
                sampler.start()
                t0 = time.perf_counter()
                got = await asyncio.gather(*(download(http, base, token, m) for m in ids))
                down_times.append(time.perf_counter() - t0)
                down_peak = max(down_peak, max(s for _, s in sampler.stop()))
                assert got == digests[:c], "a download differs from its upload"
            moved = c * sizes / MiB
            results.append(
                {
                    "concurrency": c,
                    "file_mib": sizes / MiB,
                    "upload_mib_s": round(moved / min(up_times), 1),
                    "download_mib_s": round(moved / min(down_times), 1),
                    "upload_s": round(min(up_times), 2),
                    "download_s": round(min(down_times), 2),
                    "rss_before_mib": round(baseline / MiB, 1),
                    "rss_peak_upload_mib": round(up_peak / MiB, 1),
                    "rss_peak_download_mib": round(down_peak / MiB, 1),
                }
            )
            say(json.dumps(results[-1]))
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtest.media_bench", description=__doc__)
    ap.add_argument("--mib", type=int, default=25, help="file size, MiB (default 25)")
    ap.add_argument("--concurrency", default="1,4", help="comma list (default 1,4)")
    ap.add_argument("--rounds", type=int, default=3, help="best of N rounds (default 3)")
    ap.add_argument("--s3", action="store_true", help="also against a local moto S3 server")
    ap.add_argument(
        "--database-url",
        default=os.environ.get("MESSENGER_BENCH_DATABASE_URL"),
        help="a PostgreSQL server to make a fresh database on (default: embedded)",
    )
    args = ap.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    stores = ["postgres", "s3"] if args.s3 else ["postgres"]
    infra = Infra(args.database_url, None).start()
    rows = []
    try:
        for store in stores:
            with contextlib.ExitStack() as stack:
                env = {"MESSENGER_MEDIA_MAX_BYTES": str(args.mib * MiB + 1)}
                if store == "s3":
                    endpoint = stack.enter_context(moto_server())
                    bucket = f"bench-{uuid.uuid4().hex[:8]}"
                    asyncio.run(create_bucket(endpoint, bucket))
                    env.update(
                        MESSENGER_MEDIA_STORE="s3",
                        MESSENGER_MEDIA_S3_ENDPOINT=endpoint,
                        MESSENGER_MEDIA_S3_BUCKET=bucket,
                        MESSENGER_MEDIA_S3_ACCESS_KEY_ID="bench",
                        MESSENGER_MEDIA_S3_SECRET_ACCESS_KEY="bench",
                    )
                logdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
                group = ServerGroup(logdir)
                database = infra.fresh_database()
                assert infra.redis_url
                try:
                    group.start_nodes(1, database, infra.redis_url, env)
                    group.wait_healthy()
                    say(f"{store}: node up at {group.urls[0]}")
                    for row in asyncio.run(
                        run_store(
                            group.urls[0],
                            group.pids()[0],
                            args.mib * MiB,
                            concurrencies,
                            args.rounds,
                        )
                    ):
                        rows.append({"store": store, **row})
                finally:
                    group.stop()
                    infra.drop_database(database)
    finally:
        infra.stop()
    print(
        "| store | C | file MiB | upload MiB/s | download MiB/s | node RSS before | peak (up) |"
        " peak (down) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['store']} | {r['concurrency']} | {r['file_mib']:.0f} | {r['upload_mib_s']} |"
            f" {r['download_mib_s']} | {r['rss_before_mib']} MiB | {r['rss_peak_upload_mib']} MiB |"
            f" {r['rss_peak_download_mib']} MiB |"
        )
    for r in rows:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
