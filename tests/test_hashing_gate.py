"""The hashing gate and the signal throttle on their own: who gets a worker when, who is refused,
and that a cancelled attempt gives its turn back. Real threads; the work is a function that
blocks until the test lets it finish."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from node import errors
from node.http.ws.signals import SignalThrottle
from node.services.hashing import HashingGate, Ticket


class Work:
    """A hash stand-in: `run` blocks its worker thread until `finish()`; records the order."""

    def __init__(self) -> None:
        self.order: list[str] = []
        self._release = threading.Event()

    def job(self, name: str) -> str:
        self.order.append(name)
        self._release.wait(10)
        return name

    def finish(self) -> None:
        self._release.set()


@pytest.fixture
def work() -> Iterator[Work]:
    w = Work()
    yield w
    w.finish()


@pytest.fixture
async def gate() -> AsyncIterator[HashingGate]:
    g = HashingGate(workers=1, queue=4)
    yield g
    g.close()


async def started(gate: HashingGate, running: int) -> None:
    """Let the tasks just created take their first steps (admission and a free worker are
    decided without suspending), then check how many workers the gate has handed out."""
    for _ in range(3):
        await asyncio.sleep(0)
    assert gate._running == running


async def attempt(gate: HashingGate, address: str, work: Work, name: str) -> str:
    async with gate.admit(address) as ticket:
        return await ticket.run(work.job, name)


async def test_one_attempt_per_address_at_a_time(gate: HashingGate, work: Work) -> None:
    first = asyncio.create_task(attempt(gate, "10.0.0.1", work, "first"))
    await started(gate, 1)
    with pytest.raises(errors.RateLimited) as refused:
        await attempt(gate, "10.0.0.1", work, "second")
    assert refused.value.headers == {"Retry-After": "1"}
    work.finish()
    assert await first == "first"
    assert await attempt(gate, "10.0.0.1", work, "third") == "third"  # the address is free


async def test_clean_addresses_go_before_suspect_ones(gate: HashingGate, work: Work) -> None:
    gate.failed("10.0.0.2")
    busy = asyncio.create_task(attempt(gate, "10.0.0.9", work, "busy"))
    await started(gate, 1)
    suspect = asyncio.create_task(attempt(gate, "10.0.0.2", work, "suspect"))
    await asyncio.sleep(0)  # let it queue first
    clean = asyncio.create_task(attempt(gate, "10.0.0.3", work, "clean"))
    await asyncio.sleep(0)
    assert gate.waiting == 2
    work.finish()
    await asyncio.gather(busy, suspect, clean)
    assert work.order == ["busy", "clean", "suspect"]


async def test_a_clean_arrival_at_a_full_queue_evicts_a_suspect_waiter(work: Work) -> None:
    gate = HashingGate(workers=1, queue=1)
    try:
        gate.failed("10.0.0.2")
        busy = asyncio.create_task(attempt(gate, "10.0.0.9", work, "busy"))
        await started(gate, 1)
        suspect = asyncio.create_task(attempt(gate, "10.0.0.2", work, "suspect"))
        await asyncio.sleep(0)
        clean = asyncio.create_task(attempt(gate, "10.0.0.3", work, "clean"))
        with pytest.raises(errors.RateLimited):
            await suspect
        # the queue is full of clean ones now: another clean arrival is refused at once
        with pytest.raises(errors.RateLimited):
            await attempt(gate, "10.0.0.4", work, "late")
        work.finish()
        assert await asyncio.gather(busy, clean) == ["busy", "clean"]
    finally:
        gate.close()


async def test_suspect_attempts_never_take_the_last_worker(work: Work) -> None:
    gate = HashingGate(workers=2, queue=8)
    try:
        for n in (1, 2):
            gate.failed(f"10.0.1.{n}")
        first = asyncio.create_task(attempt(gate, "10.0.1.1", work, "suspect-1"))
        await started(gate, 1)
        second = asyncio.create_task(attempt(gate, "10.0.1.2", work, "suspect-2"))
        await asyncio.sleep(0)
        assert gate.waiting == 1  # a worker is free, but not for a suspect
        clean = asyncio.create_task(attempt(gate, "10.0.1.3", work, "clean"))
        await started(gate, 2)  # the clean one starts at once on the spare worker
        assert gate.waiting == 1
        work.finish()
        await asyncio.gather(first, second, clean)
        assert work.order[:2] == ["suspect-1", "clean"]
    finally:
        gate.close()


async def test_a_cancelled_waiter_gives_its_turn_back(gate: HashingGate, work: Work) -> None:
    busy = asyncio.create_task(attempt(gate, "10.0.0.9", work, "busy"))
    await started(gate, 1)
    waiter = asyncio.create_task(attempt(gate, "10.0.0.5", work, "cancelled"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    work.finish()
    await busy
    assert await attempt(gate, "10.0.0.5", work, "after") == "after"
    assert gate._running == 0


async def test_without_fairness_only_the_worker_bound_remains(work: Work) -> None:
    gate = HashingGate(workers=1, queue=1, fair=False)
    try:
        tasks = [asyncio.create_task(attempt(gate, "10.0.0.1", work, f"n{n}")) for n in range(5)]
        await started(gate, 1)
        work.finish()
        assert await asyncio.gather(*tasks) == [f"n{n}" for n in range(5)]
    finally:
        gate.close()


def test_ticket_is_bound_to_its_gate() -> None:
    gate = HashingGate(workers=1, queue=1)
    try:
        assert Ticket(gate, suspect=True).gate is gate
    finally:
        gate.close()


# --- the signal throttle -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_typing_goes_on_once_per_interval_per_chat() -> None:
    clock = Clock()
    throttle = SignalThrottle(0.5, clock)
    assert throttle.typing(1) and throttle.typing(2)
    assert not throttle.typing(1)
    clock.now += 0.49
    assert not throttle.typing(1)
    clock.now += 0.01
    assert throttle.typing(1)


def test_read_marks_are_folded_into_the_highest_and_released_when_due() -> None:
    clock = Clock()
    throttle = SignalThrottle(0.5, clock)
    assert throttle.read(1, 3)  # the first goes on at once
    assert not throttle.read(1, 7)
    assert not throttle.read(1, 5)  # lower than one held: the held one stays the highest
    assert throttle.next_due() == pytest.approx(0.5)
    assert throttle.due() == []
    clock.now += 0.5
    assert throttle.next_due() == 0
    assert throttle.due() == [(1, 7)]
    assert throttle.next_due() is None
    assert not throttle.read(1, 8)  # within the interval of the flushed one
    assert throttle.due(all_held=True) == [(1, 8)]  # the socket closes: everything goes
