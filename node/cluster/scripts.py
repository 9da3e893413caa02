"""Lua scripts that run once per hash slot.

Every script here touches only keys it is given in KEYS, and all of one call's keys share a hash
slot (keys of one user, one chat or one node carry the same hash tag, see `node.cluster.keys`),
so a script never crosses slots on a Redis Cluster. A batch spanning many slots is run as one
call per slot, pipelined: the cluster client sends each shard its calls in one round trip, in
parallel, and follows redirections and failovers itself (rediscovering the layout). On one Redis
the whole batch is one call.

A script the server does not know (a promoted replica, a Redis restarted empty) is loaded and the
batch is run again; every script here may run twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError

from node.cluster.connection import RedisBackend

Call = tuple[Sequence[str], Sequence[bytes | str | int]]  # (KEYS, ARGV)


class SlotScript:
    def __init__(self, backend: RedisBackend, source: str) -> None:
        self._backend = backend
        self._source = source
        self._script = backend.client.register_script(source)

    async def run(self, calls: Sequence[Call]) -> list[Any]:
        """Each call's reply, in order. Raises RedisError when a call failed."""
        if not calls:
            return []
        if len(calls) == 1:  # registered scripts load themselves on NOSCRIPT
            keys, args = calls[0]
            return [await self._script(keys=list(keys), args=list(args))]
        try:
            return await self._pipelined(calls)
        except NoScriptError:
            await self._backend.client.script_load(self._source)
            return await self._pipelined(calls)

    async def _pipelined(self, calls: Sequence[Call]) -> list[Any]:
        sha = self._script.sha
        async with self._backend.client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # execute_command: redis-py <= 8.1 blocks the pipeline's evalsha() method on a
                # cluster although it routes EVALSHA by its keys (redis/redis-py#2914, #4206)
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)
            return list(await pipe.execute())
