"""`typing` and `read` frames of one connection, limited per chat before they cost anything.

Each of these frames costs a database query and a trip to the chat's actor, and fans out to every
member's every device; a client may send them at any speed. So, per chat and connection, at most
one of each kind goes on per `interval` (`settings.signal_interval`, 0.5 s by default):

- `typing`: the first of an interval goes on at once, the rest are dropped (typing is a hint that
  expires by itself; the client repeats it while the user types);
- `read`: the first of an interval goes on at once; the rest are folded into the highest seq,
  which goes on when the interval ends (a trailing flush) or when the connection closes. So a
  flood of read marks reaches peers as at most 1 / interval frames a second, and the latest mark
  is never lost.

`SignalThrottle` is the bookkeeping (no I/O, a clock passed in); `ReadFlusher` owns the one task
that sends the trailing read marks of a connection, stopped by its owner (the frame reader).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class SignalThrottle:
    __slots__ = ("_clock", "_interval", "_pending", "_read", "_typing")  # one per connection

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._typing: dict[int, float] = {}  # chat -> when the last typing went on
        self._read: dict[int, float] = {}  # chat -> when the last read went on
        self._pending: dict[int, int] = {}  # chat -> highest read seq waiting for its turn

    def typing(self, chat_id: int) -> bool:
        """True when this typing frame goes on; False when it is dropped."""
        now = self._clock()
        if now - self._typing.get(chat_id, -self._interval) < self._interval:
            return False
        self._typing[chat_id] = now
        return True

    def read(self, chat_id: int, seq: int) -> bool:
        """True when this read mark goes on now; False when it is held for the trailing flush
        (then `due` returns it, or a higher one, once the interval is over)."""
        now = self._clock()
        if chat_id not in self._pending and now - self._read.get(chat_id, -self._interval) >= (
            self._interval
        ):
            self._read[chat_id] = now
            return True
        self._pending[chat_id] = max(seq, self._pending.get(chat_id, 0))
        return False

    def next_due(self) -> float | None:
        """Seconds until the earliest held read mark may go on; None when none is held."""
        if not self._pending:
            return None
        now = self._clock()
        return max(0.0, min(self._read[c] + self._interval - now for c in self._pending))

    def due(self, *, all_held: bool = False) -> list[tuple[int, int]]:
        """The held read marks whose interval is over (or all of them), as (chat, seq); they are
        counted as gone on now."""
        now = self._clock()
        out = [
            (chat, seq)
            for chat, seq in self._pending.items()
            if all_held or now - self._read[chat] >= self._interval
        ]
        for chat, _ in out:
            del self._pending[chat]
            self._read[chat] = now
        return out


SendRead = Callable[[int, int], Awaitable[None]]


class ReadFlusher:
    """Sends a connection's held read marks when their interval is over. One task at most, made
    when a mark is held and ending when none is; `close` sends what is still held (bounded)."""

    __slots__ = ("_closing", "_send", "_task", "_throttle")  # one per connection

    def __init__(self, throttle: SignalThrottle, send: SendRead) -> None:
        self._throttle = throttle
        self._send = send
        self._task: asyncio.Task[None] | None = None
        # made with the first task: most connections never hold a mark, and an Event costs ~0.8 KiB
        self._closing: asyncio.Event | None = None

    def wake(self) -> None:
        """A mark was held: make sure it will be sent."""
        if self._task is None or self._task.done():
            if self._closing is None:
                self._closing = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._closing), name="ws-read-flush"
            )

    async def close(self, timeout: float = 2.0) -> None:
        """Send every mark still held and stop, within `timeout` seconds (then the task is
        cancelled)."""
        if self._closing is None:
            self._closing = asyncio.Event()
        self._closing.set()
        try:
            async with asyncio.timeout(timeout):
                if self._task is not None:
                    await self._task
                await self._flush(all_held=True)
        except TimeoutError:
            log.warning("ws.read_flush_timeout")
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task

    async def _run(self, closing: asyncio.Event) -> None:
        while (delay := self._throttle.next_due()) is not None:
            if not closing.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await closing.wait()
            await self._flush(all_held=closing.is_set())

    async def _flush(self, *, all_held: bool = False) -> None:
        for chat_id, seq in self._throttle.due(all_held=all_held):
            try:
                await self._send(chat_id, seq)
            except Exception:  # one chat's mark failing must not keep the others from going
                log.exception("ws.read_flush_failed", extra={"chat_id": chat_id})
