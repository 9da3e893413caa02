"""This node's memory of which other node owns a chat, so that routing a command to a chat owned
elsewhere costs no Redis read per command. (A chat owned here needs no memory: its actor is in the
registry, found without Redis.) The directory (leases) stays the truth.

An entry is kept until the lease could have moved, and no longer:

* a live holder keeps its lease until it stops the chat (idle, shutdown: it releases the lease)
  or dies. An entry expires after `ttl` (the lease TTL) anyway;
* it is dropped at once when the holder is known dead (`ClusterView`, refreshed by every
  heartbeat), when a publish to the holder reaches nobody, when a forwarded send gets no reply in
  time, and when a chat actor here hands commands back (it lost or could not take the chat).

An entry can still be stale while the holder lives: it released the chat (idle) and the chat was
taken by another node or by nobody. A command forwarded on a stale entry is not lost: the old
holder routes it again from the directory, without its own memory (`ChatPlacement.route` with
`from_peer`), to the current owner or to an actor it starts itself. So a stale entry costs one
extra hop, never a wrong owner writing (the fencing epoch decides that), and two nodes cannot
bounce a command between them on stale entries.
"""

from __future__ import annotations

import time

from node.cluster.liveness import ClusterView


class RemoteOwners:
    def __init__(self, view: ClusterView | None = None, *, ttl: float = 1.0) -> None:
        self._view = view or ClusterView()
        self._ttl = ttl
        self._owners: dict[int, tuple[str, float]] = {}  # chat -> (owner, valid until)

    def __len__(self) -> int:
        return len(self._owners)

    def get(self, chat_id: int) -> str | None:
        cached = self._owners.get(chat_id)
        if cached is None:
            return None
        owner, until = cached
        if until <= time.monotonic() or self._view.is_dead(owner):
            del self._owners[chat_id]
            return None
        return owner

    def remember(self, chat_id: int, owner: str) -> None:
        self._owners[chat_id] = (owner, time.monotonic() + self._ttl)

    def forget(self, chat_id: int) -> None:
        self._owners.pop(chat_id, None)
