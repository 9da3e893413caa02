"""`python -m loadtest.bench` runs end to end on tiny workloads: every message arrives exactly once
in `single` and `cross`, the JSON lines parse, the table prints, and `--idle` gives a positive RSS
per connection for the node and the bare aiohttp server. Each other workload (groups,
connections, storm, presence) runs once at a tiny size with 0 lost and 0 duplicated.
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
    tmp_path: Path, *args: str, timeout: float = 90, table: str = "", redis: bool = True
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
    assert table in out, f"no table header {table!r}\n{out}"
    if any(line.get("server_log_errors") for line in lines):
        print(err)  # the bench quotes the servers' error lines: shown with the failure
    return lines


def assert_clean(line: dict[str, Any]) -> None:
    """Nothing lost, duplicated, dropped or refused, and the node logged no error."""
    ctx = json.dumps(line)
    assert "error" not in line, ctx
    assert line["lost"] == 0 and line["dup"] == 0 and line["dropped"] == 0, ctx
    assert line.get("send_errors", 0) == 0 and line["server_log_errors"] == 0, ctx


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
    node, bare = run_bench(tmp_path, "--idle", "50", table="KiB/conn")
    assert (node["kind"], node["server"], bare["server"]) == ("idle", "node", "bare-aiohttp")
    for line in (node, bare):
        assert line["connections"] == 50 and line["open_at_end"] == 50, line
        assert line["rss_per_conn_kib"] > 0, line
    assert node["node_share_kib"] == round(
        node["rss_per_conn_kib"] - bare["rss_per_conn_kib"], 2
    ), node


def test_groups_deliver_every_message_to_every_member(tmp_path: Path) -> None:
    lines = run_bench(
        tmp_path,
        *("--workload", "groups", "--groups", "2", "--group-size", "6", "--messages", "10"),
        *("--rates", "0", "--topologies", "single,cross", "--drain-timeout", "3"),
        table="deliv/s",
    )
    assert [ln["topology"] for ln in lines] == ["single", "cross"]
    for ln in lines:
        assert_clean(ln)
        assert ln["confirmed"] == 2 * 10 and ln["deliveries"] == 2 * 10 * 5, ln
        assert ln["deliveries_per_s"] > 0 and ln["p99_ms"] is not None, ln
        assert ln["server_cpu_us_per_delivery"] is not None, ln


def test_connections_open_all_and_deliver_at_a_rate(tmp_path: Path) -> None:
    (line,) = run_bench(
        tmp_path,
        *("--workload", "connections", "--connections", "120", "--rate", "100"),
        *("--duration", "1", "--drain-timeout", "3"),
        table="KiB/conn",
    )
    assert_clean(line)
    assert line["connections"] == 120 and line["delivered"] == line["planned"] == 120, line
    assert line["source_addrs"] >= 2 and line["connect_all_s"] > 0, line
    assert line["rss_per_conn_kib"] is not None and line["p99_ms"] is not None, line
    # 60 pairs x 2 messages: one first-in-chat and one warm message per chat, split apart
    for part in ("first_in_chat", "warm"):
        assert 0 < line[f"p50_{part}_ms"] <= line[f"p99_{part}_ms"] <= line["max_ms"], line


def test_storm_devices_get_their_backlog_on_the_surviving_node(tmp_path: Path) -> None:
    (line,) = run_bench(
        tmp_path,
        *("--workload", "storm", "--devices", "20", "--per-sender", "10", "--backlog", "5"),
        *("--stats-wait", "0.2", "--drain-timeout", "5"),
        table="caught up s",
    )
    assert_clean(line)
    assert line["caught_up_all"] and line["dup_after_ack"] == 0, line
    assert line["sent"] == 20 * (5 + 2) and line["caught_up_s"] > 0, line
    assert line["pg_xacts"] > 0, line


def test_presence_storm_counts_presence_and_delivers(tmp_path: Path) -> None:
    (line,) = run_bench(
        tmp_path,
        *("--workload", "presence", "--group-size", "8", "--direct-users", "10"),
        *("--quiet", "0.5"),
        table="pres frames",
    )
    assert_clean(line)
    assert line["devices"] == 18 and line["all_ready_s"] > 0, line
    assert line["direct_peer_missed"] == 0 and line["presence_update_failed"] == 0, line
    assert line["presence_users"] >= line["presence_frames"] > 0, line
    assert line["confirmed"] == 5, line


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
