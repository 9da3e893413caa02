"""The cyclic garbage collector's schedule for a node that holds many objects for long.

CPython's cyclic collector runs a young collection every 700 net allocations of tracked objects
and a full one (scanning every tracked object) whenever the objects that survived into the oldest
generation grew by a quarter. A node holding tens of thousands of WebSockets, each with its
session, actor and buffers, tracks millions of objects that live as long as the connection: full
collections then stop the event loop for a long time, again and again while sockets connect and
chats start, and each young collection promotes whatever happened to be in flight. A profile of
19,000 sockets at 1,000 msgs/s spent a large share of the loop's time on allocation sites (a
timer, a future, a coroutine), which is where the collector runs.

`tune()` runs once the node is up: what exists then (modules, settings, pools) is frozen (never
scanned again: it lives as long as the process anyway) and the young generation is collected
every `_YOUNG` net allocations, so short-lived objects (a send's command, futures, frames) die
before a collection sees them and far fewer are promoted. Cyclic garbage is still collected, only
later: this trades a little memory for the loop's time, never correctness.
"""

from __future__ import annotations

import gc

_YOUNG = 50_000  # default 700
_MIDDLE = 20  # young collections per middle one (default 10)
_OLD = 10  # middle collections per full one, besides CPython's growth-by-a-quarter rule


def tune() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG, _MIDDLE, _OLD)
