"""The command line: `python -m node serve | migrate | cluster --nodes N | chat`.

Also installed as the `messenger-node` script.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from node.config import Settings, load_settings_or_exit

log = logging.getLogger("node")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="messenger-node", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run one node in the foreground")
    commands.add_parser("migrate", help="apply database migrations and exit")
    cluster = commands.add_parser("cluster", help="run a local N-node cluster")
    cluster.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    chat = commands.add_parser("chat", help="a small terminal client")
    chat.add_argument("--url", default=None, help="node URL (default: this node's host:port)")
    chat.add_argument("--user", required=True)
    chat.add_argument("--password", required=True)
    chat.add_argument("--to", required=True, help="username to chat with")
    chat.add_argument("--device", default="terminal")
    args = parser.parse_args(argv)

    settings = load_settings_or_exit()
    _configure(settings)
    if args.command == "serve":
        return serve(settings)
    if args.command == "migrate":
        return _run(migrate(settings))
    if args.command == "cluster":
        from node.local_cluster import run_cluster

        if args.nodes < 1:
            parser.error("--nodes must be at least 1")
        return run_cluster(settings, args.nodes)
    from node.client import run_chat

    url = args.url or f"http://{settings.host}:{settings.port}"
    return _run(run_chat(url, args.user, args.password, args.to, args.device))


def _configure(settings: Settings) -> None:
    from node.logs import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format, node_id=settings.node_id)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run(coro: object) -> int:
    with asyncio.Runner(loop_factory=_new_loop) as runner:
        return int(runner.run(coro) or 0)  # type: ignore[arg-type]


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; exit 0 after a graceful stop, 1 if start-up failed or a part of
    the node could not be restarted (it then stops itself gracefully, for its supervisor to
    start a fresh one)."""
    import signal

    from aiohttp import web

    from node.app import build_app
    from node.tracing import setup_tracing

    given_up: list[str] = []

    def stop_node(part: str) -> None:
        given_up.append(part)
        signal.raise_signal(signal.SIGTERM)  # aiohttp's handler: the same graceful stop

    provider = setup_tracing(settings)
    try:
        web.run_app(
            build_app(settings, on_fatal=stop_node),
            host=settings.host,
            port=settings.port,
            loop=_new_loop(),
            shutdown_timeout=settings.shutdown_timeout,
            access_log=None,
            print=None,
            handle_signals=True,
        )
    except Exception as exc:
        log.error("node.failed", exc_info=exc)
        print(f"node failed to start: {exc}", file=sys.stderr)
        return 1
    finally:
        if provider is not None:
            provider.shutdown()  # flush the last spans
    log.info("node.stopped", extra={"gave_up": given_up} if given_up else None)
    return 1 if given_up else 0


async def migrate(settings: Settings) -> int:
    from node.storage import apply_migrations

    if settings.database_url is not None:
        applied = await apply_migrations(settings.database_url)
    else:
        from node.embedded import EmbeddedServers

        servers = EmbeddedServers(settings.data_dir, postgres=True, redis=False)
        url, _ = await asyncio.to_thread(servers.start)
        try:
            applied = await apply_migrations(url or "")
        finally:
            await asyncio.to_thread(servers.stop)
    print(f"applied {len(applied)} migration(s): {', '.join(applied) or 'none pending'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
