"""The command line: `python -m node serve | migrate | cluster --nodes N | chat`.

Also installed as the `messenger-node` script.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from node.config import Settings, load_settings_or_exit


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
    from node.terminal.chat import run_chat

    url = args.url or f"http://{settings.host}:{settings.port}"
    try:
        return _run(run_chat(url, args.user, args.password, args.to, args.device))
    except KeyboardInterrupt:  # Ctrl-C quits the chat: no traceback
        return 130


def _configure(settings: Settings) -> None:
    from node.logs import configure_logging

    configure_logging(level=settings.log_level, fmt=settings.log_format, node_id=settings.node_id)


def _run(coro: object) -> int:
    from node.serve import new_loop

    with asyncio.Runner(loop_factory=new_loop) as runner:
        return int(runner.run(coro) or 0)  # type: ignore[arg-type]


def serve(settings: Settings) -> int:
    """Run one node until SIGTERM/SIGINT (see `node.serve`)."""
    from node.serve import serve as run_node

    return run_node(settings)


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
