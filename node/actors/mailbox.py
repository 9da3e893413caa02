"""An actor's mailbox: a bounded FIFO with one consumer, and the errors a sender can meet.

`put` never blocks: past the capacity it raises `MailboxFull`, after `close` `ActorStopped`. The
runtime (`node.actors.runtime`) either waits on `wait` with a task, or, for a dormant actor, sets
`sleeper`, whose `wake` is called by the next `put` or `close`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol


class ActorError(Exception):
    pass


class MailboxFull(ActorError):
    """The actor's mailbox holds its capacity: back off or shed load."""


class ActorStopped(ActorError):
    """The actor is stopping or stopped; resolve a fresh ref and try again."""


class Sleeper(Protocol):
    def wake(self) -> None: ...


class Mailbox:
    """A bounded FIFO with one consumer (the actor's task). The queue itself exists only while
    something is in it: most actors are idle most of the time, and an empty deque costs ~0.7 KiB."""

    __slots__ = ("_capacity", "_closed", "_items", "_waiter", "sleeper")

    def __init__(self, capacity: int) -> None:
        self._items: deque[Any] | None = None
        self._capacity = capacity
        self._closed = False
        self._waiter: asyncio.Future[None] | None = None
        # a dormant actor's wake-up, called at the next put or close (set by the runtime)
        self.sleeper: Sleeper | None = None

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Any) -> None:
        if self._closed:
            raise ActorStopped
        items = self._items
        if items is None:
            items = self._items = deque()
        elif len(items) >= self._capacity:
            raise MailboxFull
        items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.sleeper is not None:
            self.sleeper.wake()

    def close(self) -> None:
        self._closed = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.sleeper is not None:
            self.sleeper.wake()

    def take(self, limit: int) -> list[Any]:
        items = self._items
        if items is None:
            return []
        if len(items) <= limit:
            self._items = None
            return list(items)
        return [items.popleft() for _ in range(limit)]

    async def wait(self, timeout: float | None) -> bool:
        """Wait until something is in the mailbox or it is closed; False on timeout."""
        if self._items or self._closed:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return bool(self._items) or self._closed


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
