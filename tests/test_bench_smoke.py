"""`python -m loadtest.bench` runs end to end on a tiny workload: every message arrives exactly once
in `single` and `cross`, the JSON lines parse, `--idle` gives a positive RSS per connection, and
`--redis-cluster` measures the Redis cost of a message over one Redis and a Redis Cluster.

The bench runs as its own process (as `./dev bench` would) against the test PostgreSQL/Redis
(`MESSENGER_TEST_DATABASE_URL` / `MESSENGER_TEST_REDIS_URL`; it creates and drops its own
database and flushes a Redis DB of its own), or else starts embedded servers itself. Its temp
files go under this test's tmp_path (TMPDIR), which is how the test checks afterwards that no
process of the run is left: nodes, workers, embedded servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest

from tests.cluster_support import redis_cluster_available
from tests.support import REPO

pytestmark = pytest.mark.process

BENCH_REDIS_DB = 13  # not the tests' DB 9: the bench flushes the DB it is given
PAIRS, MESSAGES = 4, 20


def infra_args(redis: bool = True) -> list[str]:
    args = []
    if url := os.environ.get("MESSENGER_TEST_DATABASE_URL"):
        args += ["--database-url", url]
    if redis and (url := os.environ.get("MESSENGER_TEST_REDIS_URL")):
        args += ["--redis-url", url.rsplit("/", 1)[0] + f"/{BENCH_REDIS_DB}"]
    return args


def leftovers(root: Path) -> list[psutil.Process]:
    """Processes working under `root` or started with an environment pointing into it."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if proc.pid == os.getpid():
                continue
            if str(root) in proc.cwd() or any(str(root) in v for v in proc.environ().values()):
                found.append(proc)
    return found


def run_bench(
    tmp_path: Path, *args: str, timeout: float = 90, redis: bool = True
) -> list[dict[str, Any]]:
    """Run the bench; its JSON lines. Whatever it started is gone afterwards (or killed).
    `redis=False`: the bench starts its own Redis servers."""
    tmp = tmp_path / "tmp"
    tmp.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "loadtest.bench", *args, *infra_args(redis)]
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the bench stops its servers on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=30)
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers, embedded servers
        left = leftovers(tmp)
        for p in left:  # nodes: each its own process group
            with contextlib.suppress(psutil.Error, ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL) if os.getpgid(p.pid) == p.pid else p.kill()
        psutil.wait_procs(left, timeout=10)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    assert not left, f"left running: {[p.pid for p in left]}\n{err}"
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no JSON line\n{out}\n{err}"
    return lines


def test_pairs_single_and_cross_deliver_everything_once(tmp_path: Path) -> None:
    lines = run_bench(
        tmp_path,
        "--pairs",
        str(PAIRS),
        "--messages",
        str(MESSAGES),
        "--rates",
        "0",
        "--topologies",
        "single,cross",
        "--workers",
        "2",
        "--drain-timeout",
        "3",
        "--out",
        str(tmp_path / "out.jsonl"),
    )
    assert [(ln["kind"], ln["topology"]) for ln in lines] == [
        ("pairs", "single"),
        ("pairs", "cross"),
    ]
    for ln in lines:
        ctx = json.dumps(ln)
        assert ln["lost"] == 0 and ln["dup"] == 0, ctx
        assert ln["sent"] == ln["confirmed"] == ln["delivered"] == PAIRS * MESSAGES, ctx
        assert ln["send_errors"] == 0 and ln["misrouted"] == 0 and ln["out_of_order"] == 0, ctx
        assert ln["msgs_per_s"] > 0 and ln["p50_ms"] is not None, ctx
        assert ln["server_cpu_s"] is not None and ln["server_rss_peak_mb"] > 0, ctx
    written = (tmp_path / "out.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in written] == lines


def test_idle_connections_have_a_positive_rss_cost(tmp_path: Path) -> None:
    (line,) = run_bench(tmp_path, "--idle", "50")
    assert line["kind"] == "idle" and line["connections"] == 50, line
    assert line["open_at_end"] == 50, line
    assert line["rss_per_conn_kib"] > 0, line


def test_redis_cost_over_one_redis_and_a_redis_cluster(tmp_path: Path) -> None:
    redis_cluster_available()
    lines = run_bench(
        tmp_path,
        *("--redis-cluster", "--nodes", "2", "--rates", "0", "--drain-timeout", "3"),
        *("--pairs", str(PAIRS), "--messages", str(MESSAGES)),
        timeout=150,
        redis=False,
    )
    assert [(ln["redis"], ln["nodes"], ln["redis_shards"]) for ln in lines] == [
        ("single", 2, 1),
        ("cluster", 2, 3),
    ]
    for ln in lines:
        ctx = json.dumps(ln)
        assert ln["lost"] == 0 and ln["dup"] == 0, ctx
        assert ln["delivered"] == PAIRS * MESSAGES and ln["server_log_errors"] == 0, ctx
        assert ln["redis_calls_per_msg"] > 0 and ln["redis_cpu_us_per_msg"] > 0, ctx
        assert len(ln["redis_calls_per_msg_by_shard"]) == ln["redis_shards"], ctx
    single, cluster = (ln["redis_commands_per_msg"] for ln in lines)
    assert "publish" in single and "spublish" not in single
    assert "spublish" in cluster and "publish" not in cluster  # sharded: never broadcast
