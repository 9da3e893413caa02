"""Fair, bounded access to the node's password-hashing workers.

bcrypt is slow on purpose (about 0.25 s of one core at cost 12), so a flood of bad logins is a
flood of CPU work. A plain semaphore would bound the work but queue a real user's login behind
every bad one. This gate gives each client address a fair share instead, and sheds what is over
it before any hash is computed:

- `workers` hashes run at once, each in a thread of the gate's own pool (bcrypt releases the GIL);
- a client address has at most one attempt admitted (waiting or hashing) at a time: a second one
  while the first is under way is refused at once (429, `Retry-After: 1`);
- at most `queue` attempts wait for a worker; past that a new one is refused at once;
- addresses with a failed login in the last `SUSPECT_FOR` seconds are "suspect": they wait
  behind the others, never hold the last free worker (with two workers or more), and a clean
  arrival at a full queue takes the place of the newest suspect waiter (who gets the 429).

The bound this gives: an attempt from an address with nothing under way and no recent failure
starts hashing once the clean attempts ahead of it are done (at most `queue`, shared by
`workers`), and never waits for a suspect one: while a flood comes from addresses that have
already failed, a good login starts at once, on a worker of its own, and takes one hash duration
(about 0.25 s at cost 12) plus what CPU contention adds. Per node: each node bounds its own CPU
(the attempt limits across the cluster are `node.services.auth_throttle`).

With `fair=False` (`MESSENGER_AUTH_THROTTLE=false`: benchmarks, load tests that log in many
users from one address) only the worker bound remains: attempts wait in arrival order, unbounded.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from node import errors

T = TypeVar("T")

SUSPECT_FOR = 600.0  # seconds an address stays behind the others after a failed login
_REMEMBERED = 50_000  # addresses with a recent failure kept at most (oldest forgotten first)


def busy() -> errors.RateLimited:
    return errors.RateLimited("too many login attempts at once, retry shortly", retry_after=1)


@dataclass(slots=True, eq=False)
class Ticket:
    """One admitted attempt: permission to use the hashing workers, at its address's priority."""

    gate: HashingGate
    suspect: bool

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on a hashing worker, once this attempt's turn comes."""
        return await self.gate.run(self, fn, *args)


class HashingGate:
    def __init__(
        self,
        workers: int,
        queue: int,
        *,
        fair: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._workers = workers
        self._queue_max = queue
        self._fair = fair
        self._clock = clock
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="password-hash")
        self._running = 0
        self._running_suspect = 0
        # suspect attempts never take the last worker: one is always free for the others
        self._suspect_workers = max(1, workers - 1)
        self._clean: deque[asyncio.Future[None]] = deque()
        self._suspect: deque[asyncio.Future[None]] = deque()
        self._admitted: set[str] = set()
        self._failures: OrderedDict[str, float] = OrderedDict()

    @property
    def waiting(self) -> int:
        return len(self._clean) + len(self._suspect)

    def close(self) -> None:
        """Stop the workers (after the hashes under way); waiting attempts are refused."""
        for future in (*self._clean, *self._suspect):
            if not future.done():
                future.set_exception(errors.Unavailable("node shutting down"))
        self._clean.clear()
        self._suspect.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @asynccontextmanager
    async def admit(self, address: str) -> AsyncIterator[Ticket]:
        """Admit one attempt from `address` for as long as the block runs; `RateLimited` at once
        when that address already has one under way."""
        if not self._fair:
            yield Ticket(self, suspect=False)
            return
        if address in self._admitted:
            raise busy()
        self._admitted.add(address)
        try:
            yield Ticket(self, suspect=self._is_suspect(address))
        finally:
            self._admitted.discard(address)

    def failed(self, address: str) -> None:
        """A login from `address` failed: its next attempts wait behind the others for a while."""
        self._failures[address] = self._clock()
        self._failures.move_to_end(address)
        while len(self._failures) > _REMEMBERED:
            self._failures.popitem(last=False)

    async def run(self, ticket: Ticket, fn: Callable[..., T], *args: object) -> T:
        await self._acquire(ticket)
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._executor, fn, *args)
        # the worker is free when its thread is, not before (even if this caller is cancelled)
        work.add_done_callback(functools.partial(self._release, ticket.suspect))
        return await asyncio.shield(work)

    def _is_suspect(self, address: str) -> bool:
        failed_at = self._failures.get(address)
        return failed_at is not None and self._clock() - failed_at < SUSPECT_FOR

    def _may_start(self, suspect: bool) -> bool:
        if self._running >= self._workers:
            return False
        return not suspect or self._running_suspect < self._suspect_workers

    async def _acquire(self, ticket: Ticket) -> None:
        line = self._suspect if ticket.suspect else self._clean
        if self._may_start(ticket.suspect) and not line and not self._clean:
            self._start(ticket.suspect)
            return
        if self._fair and self.waiting >= self._queue_max:
            if ticket.suspect or not self._suspect:
                raise busy()
            evicted = self._suspect.pop()  # the newest suspect waiter makes room
            evicted.set_exception(busy())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(future)
        try:
            await future  # granted by `_grant`, which counts this attempt as running
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._release(ticket.suspect)  # granted, then cancelled before it ran
            elif future in line:
                line.remove(future)
            raise

    def _start(self, suspect: bool) -> None:
        self._running += 1
        self._running_suspect += suspect

    def _release(self, suspect: bool, _: object = None) -> None:
        self._running -= 1
        self._running_suspect -= suspect
        self._grant()

    def _grant(self) -> None:
        """Start waiters while workers are free: clean ones first, suspect ones within their
        share."""
        while True:
            if self._clean and self._may_start(False):
                future, suspect = self._clean.popleft(), False
            elif self._suspect and self._may_start(True):
                future, suspect = self._suspect.popleft(), True
            else:
                return
            if not future.done():
                self._start(suspect)
                future.set_result(None)
