"""Keeps the embedded servers running while the node runs.

:class:`EmbeddedWatch` is one of the node's background loops: it waits for each server process
to exit and, unless the server was stopped on purpose, starts it again on the same port (the
node's clients keep their URL and reconnect by themselves), logging ``embedded.died`` and then
``embedded.restarted``. A restart that fails is tried again with exponential back-off (logged as
``embedded.restart_failed``) for as long as the node runs: meanwhile the node answers 503 where
it needs that server, and ``/healthz`` names it.

Stopping: cancel :meth:`run` before stopping the servers (the node's shutdown does, in that
order). A restart already under way in its thread finishes first; the server's ``stop`` waits
for it, so nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
from collections.abc import Sequence
from urllib.parse import urlsplit

from ._process import EmbeddedError, ServerProcess

log = logging.getLogger("node.embedded")


class EmbeddedWatch:
    def __init__(
        self,
        servers: Sequence[ServerProcess],
        *,
        first_retry: float = 0.5,
        max_retry: float = 30.0,
    ) -> None:
        self._servers = tuple(servers)
        self._first_retry = first_retry
        self._max_retry = max_retry

    async def run(self) -> None:
        """Watch every server until cancelled."""
        async with asyncio.TaskGroup() as group:
            for server in self._servers:
                group.create_task(self._watch(server), name=f"embedded.watch.{server.kind}")

    async def _watch(self, server: ServerProcess) -> None:
        while (proc := server.process) is not None:
            code = await exited(proc)
            if server.process is not proc:  # stopped (or restarted) meanwhile, not by us
                continue
            log.warning(
                "embedded.died", extra={"server": server.kind, "pid": proc.pid, "returncode": code}
            )
            await self._revive(server)

    async def _revive(self, server: ServerProcess) -> None:
        delay = self._first_retry
        while True:
            try:
                if await asyncio.to_thread(server.revive):
                    log.warning(
                        "embedded.restarted",
                        extra={
                            "server": server.kind,
                            "port": _port_of(server.url),
                            "pid": server.pid,
                        },
                    )
                return
            except (EmbeddedError, OSError, subprocess.SubprocessError) as exc:
                log.error(
                    "embedded.restart_failed",
                    extra={"server": server.kind, "error": str(exc), "retry_in": delay},
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_retry)


def _port_of(url: str) -> int | None:
    return urlsplit(url).port


async def exited(proc: subprocess.Popen[bytes], poll_interval: float = 0.5) -> int:
    """Wait for ``proc`` to exit; its return code. On Linux a pidfd tells the event loop the
    moment it exits; elsewhere, or if the pidfd cannot be had, it is polled."""
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):  # ESRCH: already reaped
            fd = os.pidfd_open(proc.pid)
            try:
                if proc.poll() is None:
                    await _readable(fd)
            finally:
                os.close(fd)
    while True:  # poll() may find another thread reaping: then ask again
        code = proc.poll()
        if code is not None:
            return code
        await asyncio.sleep(poll_interval)


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_readable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, on_readable)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
