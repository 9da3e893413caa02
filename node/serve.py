"""`python -m node serve`: one node in the foreground, as a person or a supervisor runs it.

What is guaranteed:

* The listening socket is bound before anything else starts: a busy port is one line on stderr
  and exit code 1, before the embedded servers start and before `node.started` is logged.
* Once the node serves, one line on stdout says where it listens, where its data lives and how
  to stop it (:func:`banner`).
* The first SIGINT or SIGTERM stops the node gracefully: the listener closes, WebSockets get
  1001, actors drain, acks are flushed, then the embedded servers stop; `node.stopped` is logged
  and the exit code is 0. Signals after the first are logged and ignored (the drain is bounded by
  `MESSENGER_SHUTDOWN_TIMEOUT`), so a terminal's Ctrl-C followed by a supervisor's SIGTERM
  cannot cut a drain short. A signal during start-up stops what was started, with exit code 0.
* A start-up failure is one line on stderr (with the details in the log) and exit code 1.
* A part of the node that cannot be restarted any more (`node.supervisor`) stops the node the
  same graceful way, with exit code 1, so that its own supervisor starts a fresh one.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from node.config import Settings

if TYPE_CHECKING:
    from aiohttp import web

log = logging.getLogger("node")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; 0 after a graceful stop, 1 if the node could not start."""
    try:
        listeners = bind(settings.host, settings.port)
    except OSError as exc:
        print(_bind_problem(settings.host, settings.port, exc), file=sys.stderr)
        return 1
    from node.tracing import setup_tracing

    provider = setup_tracing(settings)
    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(_serve(settings, listeners))
    finally:
        for sock in listeners:
            sock.close()
        if provider is not None:
            provider.shutdown()  # flush the last spans


def bind(host: str, port: int) -> list[socket.socket]:
    """Bound (not yet listening) sockets for every address of `host`, as asyncio would make
    them: SO_REUSEADDR (a restart does not wait out TIME_WAIT; a live listener still refuses
    us), IPv6 sockets IPv6-only."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):  # unique, in order
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where}: the port is in use (another node?); "
            "stop that process or set MESSENGER_PORT"
        )
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied; set MESSENGER_PORT above 1023"
    return f"cannot listen on {where}: {exc.strerror or exc}; check MESSENGER_HOST"


def banner(settings: Settings, address: tuple[str, int], pid: int) -> str:
    """The one line a person needs: where the node listens, where its data is, how to stop it."""
    host, port = address[0], address[1]
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    embedded = [
        name
        for name, url_set in (("PostgreSQL", settings.database_url), ("Redis", settings.redis_url))
        if url_set is None
    ]
    external = [_safe(u) for u in (settings.database_url, settings.redis_url) if u is not None]
    where = []
    if embedded:
        where.append(f"{settings.data_dir.resolve()} (embedded {' and '.join(embedded)})")
    where.extend(external)
    return (
        f"node {settings.node_id} listening on {url}; data in {' and '.join(where)}; "
        f"Ctrl-C or kill {pid} stops it"
    )


def _safe(url: str) -> str:
    """`url` without its credentials."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


async def _serve(settings: Settings, listeners: list[socket.socket]) -> int:
    from aiohttp import web

    from node import gc_schedule
    from node.app import build_app

    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stop = asyncio.Event()
    serving = False
    given_up: list[str] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.info("node.stop_in_progress", extra={"signal": name})
            return
        stop.set()
        log.info("node.stop_requested", extra={"signal": name})
        if not serving:
            main.cancel()  # stop the start-up; what it started is stopped on the way out

    def on_fatal(part: str) -> None:
        given_up.append(part)
        if not stop.is_set():
            stop.set()
            log.error("node.stop_requested", extra={"gave_up": part})

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, on_signal, signum)
    runner = web.AppRunner(
        build_app(settings, on_fatal=on_fatal),
        handle_signals=False,
        access_log=None,
        shutdown_timeout=settings.shutdown_timeout,
    )
    code = 1
    try:
        try:
            await runner.setup()
            for sock in listeners:
                await web.SockSite(runner, sock, backlog=settings.listen_backlog).start()
        except asyncio.CancelledError:
            if not stop.is_set():
                raise
            main.uncancel()  # our own cancellation, done with
            code = 0
            return code
        except Exception as exc:
            log.error("node.failed", exc_info=exc)
            print(f"node failed to start: {exc}", file=sys.stderr)
            return code
        serving = True
        gc_schedule.tune()  # see there: long full collections stall a node with many sockets
        address = listeners[0].getsockname()
        print(banner(settings, (address[0], address[1]), os.getpid()), flush=True)
        await stop.wait()
        code = 1 if given_up else 0
    finally:
        code = await _stop(runner, code)
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        log.info("node.stopped", extra={"exit_code": code})
    return code


async def _stop(runner: web.AppRunner, code: int) -> int:
    """Drain and stop; `code`, or 1 if the drain itself failed (a bug: it is logged)."""
    try:
        await runner.cleanup()
    except Exception as exc:
        log.error("node.stop_failed", exc_info=exc)
        return 1
    return code
