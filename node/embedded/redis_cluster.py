"""A throwaway Redis Cluster on this machine, for tests and benchmarks (the node never starts one:
it is given `redis+cluster://…`).

`LocalRedisCluster` runs `masters * (1 + replicas)` redis-server processes of the system's Redis
(7 or newer: sharded Pub/Sub), each a child of the caller with its own directory, client port and
cluster-bus port on 127.0.0.1, no persistence, then joins them with `redis-cli --cluster create`
and waits until every member reports `cluster_state:ok` and every replica is in sync. `stop`
stops them all; `kill(port)` and `start_member(port)` crash and bring back one member (it rejoins
the cluster from its `nodes.conf`, as a replica if it was failed over); `restart_empty()` stops
everything, forgets everything and creates the cluster again on the same ports.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from ._process import HOST, EmbeddedError, ServerProcess, _free_port


def system_redis(name: str = "redis-server") -> Path:
    """The system's redis-server (or redis-cli): on PATH, or Debian's /usr/bin."""
    found = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else "")
    if not found:
        raise EmbeddedError(f"{name} (Redis 7 or newer) is not installed: apt-get install redis")
    return Path(found)


def _command(port: int, *command: str | int, timeout: float = 2.0) -> Any:
    """One command to one member, its reply as the client parses it. Raises RedisError."""
    client = redis.Redis(host=HOST, port=port, socket_timeout=timeout, decode_responses=True)
    try:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        client.close()


def _call(port: int, *command: str | int, timeout: float = 2.0) -> str:
    """One command to one member: its reply as text, or '' when it cannot be asked."""
    try:
        reply = _command(port, *command, timeout=timeout)
    except (redis.RedisError, OSError):
        return ""
    return "PONG" if reply is True else str(reply)


class LocalRedisServer(ServerProcess):
    """One redis-server of the system's Redis without persistence: a member of a local Redis
    Cluster (`cluster=True`), or a Redis of its own (a benchmark's single Redis of the same
    version). A restarted member starts empty unless its shard's replica holds the data."""

    kind = "redis"
    process_name = "redis-server"

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        cluster: bool = True,
        node_timeout_ms: int = 2000,
    ) -> None:
        port = port or _free_port()
        super().__init__(root, port=port, start_timeout=30.0)
        self.port = port
        self.cluster = cluster
        self.bus_port = _free_port()
        self.node_timeout_ms = node_timeout_ms
        self._executable = system_redis()

    @property
    def workdir(self) -> Path:
        return self.root

    def _url(self, port: int) -> str:
        return f"redis://{HOST}:{port}/0"

    def _command(self, port: int) -> list[str]:
        common = [
            str(self._executable),
            *("--bind", HOST, "--port", str(port), "--dir", str(self.root)),
            *("--daemonize", "no", "--save", "", "--appendonly", "no"),
        ]
        if not self.cluster:
            return common
        return [
            *common,
            "--cluster-enabled",
            "yes",
            "--cluster-port",
            str(self.bus_port),
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            "--cluster-replica-validity-factor",
            "0",  # a replica may always take over (nothing here is ever far behind)
            "--repl-diskless-sync-delay",
            "0",  # replicas sync at once
        ]

    def _is_ready(self, port: int) -> bool:
        return _call(port, "PING") == "PONG"

    def info(self, section: str) -> dict[str, Any]:
        """INFO of one section as redis-py parses it ({} when the server cannot be asked)."""
        try:
            reply: dict[str, Any] = _command(self.port, "INFO", section)
        except (redis.RedisError, OSError):
            return {}
        return reply

    def forget_everything(self) -> None:
        """Remove its files (nodes.conf): the next start is a new, empty member."""
        for path in self.root.glob("*"):
            if path.name != self.log_path.name:
                path.unlink(missing_ok=True)


class LocalRedisCluster:
    def __init__(
        self,
        root: Path,
        *,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 2000,
        start_timeout: float = 60.0,
    ) -> None:
        self.root = root.resolve()
        self.replicas = replicas
        self.start_timeout = start_timeout
        self.members = [
            LocalRedisServer(self.root / f"m{i}", node_timeout_ms=node_timeout_ms)
            for i in range(masters * (1 + replicas))
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"{HOST}:{m.port}" for m in self.members)

    @property
    def ports(self) -> list[int]:
        return [m.port for m in self.members]

    def pids(self) -> list[int]:
        return [pid for m in self.members if (pid := m.pid) is not None]

    def member(self, port: int) -> LocalRedisServer:
        return next(m for m in self.members if m.port == port)

    def start(self) -> str:
        """Start every member, create the cluster, wait until it serves; its URL."""
        for member in self.members:
            member.start()
        addresses = [f"{HOST}:{m.port}" for m in self.members]
        done = subprocess.run(
            [
                str(system_redis("redis-cli")),
                *("--cluster", "create", *addresses),
                *("--cluster-replicas", str(self.replicas), "--cluster-yes"),
            ],
            capture_output=True,
            text=True,
            timeout=self.start_timeout,
        )
        if done.returncode != 0:
            self.stop()
            raise EmbeddedError(f"redis-cli --cluster create failed:\n{done.stdout}{done.stderr}")
        self.wait_ok()
        return self.url

    def wait_ok(self, timeout: float | None = None) -> None:
        """Until every running member says cluster_state:ok, knows every other running member,
        and every replica's link to its master is up."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        while True:
            running = [m for m in self.members if m.pid is not None]
            if all(self._settled(m, len(running)) for m in running):
                return
            if time.monotonic() > deadline:
                raise EmbeddedError("the local Redis Cluster did not settle")
            time.sleep(0.05)

    @staticmethod
    def _settled(member: LocalRedisServer, running: int) -> bool:
        if "cluster_state:ok" not in _call(member.port, "CLUSTER", "INFO"):
            return False
        nodes = [line for line in _call(member.port, "CLUSTER", "NODES").splitlines() if line]
        healthy = [n for n in nodes if "fail" not in n.split()[2] and "connected" in n]
        if len(healthy) < running:
            return False
        replication = member.info("replication")
        return replication.get("role") != "slave" or replication.get("master_link_status") == "up"

    def flush(self) -> None:
        """Empty every master (replicas follow)."""
        for member in self.members:
            if member.pid is not None and member.info("replication").get("role") == "master":
                _call(member.port, "FLUSHALL")

    def masters(self) -> list[int]:
        """The ports of the running members that are masters now."""
        return [
            m.port
            for m in self.members
            if m.pid is not None and m.info("replication").get("role") == "master"
        ]

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s hash slot now (as the first running master
        sees the cluster)."""
        slot = key_slot(key.encode())
        for line in _call(self.masters()[0], "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                if span.startswith("["):  # a slot being migrated: its owner is still listed
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rsplit(":", 1)[1])
        raise EmbeddedError(f"no master serves slot {slot}")

    def migrate(self, key: str, to_port: int) -> None:
        """Move `key`'s hash slot (and every key in it) to the master on `to_port`, the way
        `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, MIGRATE the keys, then assign
        the slot to its new owner everywhere."""
        slot = key_slot(key.encode())
        source = self.master_of(key)
        if source == to_port:
            return
        source_id = _command(source, "CLUSTER", "MYID")
        target_id = _command(to_port, "CLUSTER", "MYID")
        _command(to_port, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        _command(source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        while moving := _command(source, "CLUSTER", "GETKEYSINSLOT", slot, 100):
            _command(source, "MIGRATE", HOST, to_port, "", 0, 5000, "KEYS", *moving)
        for port in [to_port, source, *(p for p in self.masters() if p not in (source, to_port))]:
            _command(port, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def kill(self, port: int) -> None:
        """SIGKILL one member, as a crash would."""
        self.member(port).kill()

    def start_member(self, port: int) -> None:
        """Start a member again (it rejoins from its nodes.conf)."""
        self.member(port).start()

    def restart_empty(self) -> None:
        """Every member stopped and forgotten, then the cluster created anew on the same ports."""
        self.stop()
        for member in self.members:
            member.forget_everything()
        self.start()

    def stop(self) -> None:
        for member in self.members:
            with contextlib.suppress(Exception):
                member.stop()

    def __enter__(self) -> LocalRedisCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
