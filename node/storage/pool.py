"""The node's one asyncpg pool."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb <-> Python with orjson; attachments and other json columns come back decoded
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: orjson.dumps(value).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's per-release `RESET ALL; UNLISTEN *; ...` round trip: the node never changes
    session state on pooled connections (no SET, LISTEN or session advisory locks; migrations
    use a connection of their own), so there is nothing to reset."""


async def create_pool(dsn: str, *, size: int, **kwargs: Any) -> asyncpg.Pool:
    """A pool whose connections decode jsonb and keep prepared statements cached."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min(2, size),
        max_size=size,
        init=_init_connection,
        reset=_keep_session,
        command_timeout=30,
        max_inactive_connection_lifetime=300,
        **kwargs,
    )
    assert pool is not None
    return pool
