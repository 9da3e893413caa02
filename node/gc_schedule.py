"""The cyclic garbage collector's schedule for a node that holds many objects for long.

CPython's cyclic collector runs a young collection every 700 net allocations of tracked objects
and a full one (scanning every tracked object) whenever the objects that survived into the oldest
generation grew by a quarter. A node holding tens of thousands of WebSockets, each with its
session, actor and buffers, tracks millions of objects that live as long as the connection: full
collections then stop the event loop for a long time, again and again while sockets connect and
chats start.

`tune()` runs once the node is up: what exists then (modules, settings, pools) is frozen (never
scanned again: it lives as long as the process anyway), and the thresholds are chosen for the
length of each stop, since every collection stops the event loop and so delays every message in
flight:

* the young threshold counts *net* allocations (tracked objects created minus freed), so a young
  collection scans about that many objects that are alive at that moment; its stop grows with
  the threshold. 10,000 objects take ~2.5 ms on the 2-core dev machine (50,000 took ~20 ms, up
  to 200 ms under load);
* a middle collection scans what survived the young collections since the last one, up to
  `_YOUNG * _MIDDLE` objects: 50,000 (~30 ms) here. With 50,000 * 20 it was up to a million
  objects, one stop of ~440 ms in the middle of a run of 10,000 sockets at 1,000 msgs/s.

Full collections keep CPython's growth-by-a-quarter rule: they come while the heap grows (sockets
connecting) and seldom once it is steady. Cyclic garbage is still collected; this trades a few
more, shorter stops for the long ones, never correctness.
"""

from __future__ import annotations

import gc

_YOUNG = 10_000  # default 700
_MIDDLE = 5  # young collections per middle one (default 10)
_OLD = 10  # middle collections per full one, besides CPython's growth-by-a-quarter rule

MAX_MIDDLE_SCAN = _YOUNG * _MIDDLE  # objects a middle collection scans at most (beyond the young)


def tune() -> None:
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG, _MIDDLE, _OLD)
