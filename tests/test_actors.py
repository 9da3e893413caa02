"""The actor runtime (node/actors/runtime.py): mailbox bounds, the three phases, supervision,
batching, passivation and the registry's bounded close.

Every wait is on an event or on the actor's stop future; the only clock involved is an
`idle_timeout` under test and the registry's close timeout under test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from node.actors.runtime import (
    Actor,
    ActorRef,
    ActorRegistry,
    ActorStopped,
    Ask,
    MailboxFull,
    RestartBudget,
    StopActor,
)

WAIT = 2.0  # bound on every wait for something that should happen at once


class Boom(Exception):
    pass


class Recorder(Actor[Any]):
    """Records what it handles; `("raise", exc)` raises, "sync" answers with what it saw,
    `("double", n)` answers 2n, "block" waits on `gate` after setting `entered`."""

    def __init__(self, *, mailbox_size: int = 1000) -> None:
        self.mailbox_size = mailbox_size
        self.seen: list[Any] = []
        self.log: list[str] = []
        self.starts = 0
        self.stops = 0
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.undelivered: list[Any] = []
        self.undeliverable_reason: Exception | None = None

    async def on_start(self) -> None:
        self.starts += 1
        self.log.append("start")

    async def receive(self, message: Any) -> Any:
        if message == "block":
            self.entered.set()
            await self.gate.wait()
        elif isinstance(message, tuple) and message[0] == "raise":
            self.log.append("raise")
            raise message[1]
        elif isinstance(message, tuple) and message[0] == "double":
            return message[1] * 2
        elif message == "sync":
            return list(self.seen)
        self.seen.append(message)
        self.log.append("recv")
        return None

    async def on_stop(self) -> None:
        self.stops += 1
        self.log.append("stop")

    def undeliverable(self, messages: list[Any], reason: Exception) -> None:
        self.undelivered.extend(messages)
        self.undeliverable_reason = reason
        super().undeliverable(messages, reason)


@pytest.fixture
async def registry() -> AsyncIterator[ActorRegistry]:
    reg = ActorRegistry("test")
    yield reg
    await reg.close(timeout=WAIT)


async def stopped(ref: ActorRef[Any]) -> None:
    async with asyncio.timeout(WAIT):
        await ref.wait_stopped()


# --- mailbox ---------------------------------------------------------------------------------


async def test_messages_are_handled_in_tell_order(registry: ActorRegistry) -> None:
    actor = Recorder()
    ref = registry.spawn("a", actor)
    for i in range(50):
        ref.tell(i)
    assert await ref.ask("sync", timeout=WAIT) == list(range(50))


async def test_tell_on_a_full_mailbox_raises_at_once(registry: ActorRegistry) -> None:
    actor = Recorder(mailbox_size=3)
    ref = registry.spawn("a", actor)
    ref.tell("block")
    async with asyncio.timeout(WAIT):
        await actor.entered.wait()  # the actor is busy; its mailbox is empty again
    for i in range(3):
        assert ref.tell(i) is None  # a plain call, not a coroutine to await
    with pytest.raises(MailboxFull):
        ref.tell(3)
    with pytest.raises(MailboxFull):
        await ref.ask(("double", 1))
    assert ref.mailbox_depth == 3
    actor.gate.set()
    async with asyncio.timeout(WAIT):
        await ref.stop()
    assert actor.seen == ["block", 0, 1, 2]  # what fitted, nothing else


async def test_tell_and_ask_after_stop_raise_actor_stopped(registry: ActorRegistry) -> None:
    ref = registry.spawn("a", Recorder())
    ref.request_stop()
    with pytest.raises(ActorStopped):
        ref.tell(1)  # refused at once, while the actor is still draining
    await stopped(ref)
    assert not ref.alive
    with pytest.raises(ActorStopped):
        ref.tell(2)
    with pytest.raises(ActorStopped):
        await ref.ask(("double", 2))


async def test_stop_drains_the_mailbox_then_flushes_once(registry: ActorRegistry) -> None:
    actor = Recorder()
    ref = registry.spawn("a", actor)
    ref.tell("block")
    async with asyncio.timeout(WAIT):
        await actor.entered.wait()
    for i in range(5):
        ref.tell(i)
    answer = asyncio.ensure_future(ref.ask(("double", 4)))
    await asyncio.sleep(0)  # let the ask enqueue
    stopping = asyncio.ensure_future(ref.stop())
    await asyncio.sleep(0)
    assert not stopping.done()  # stop waits for the drain
    with pytest.raises(ActorStopped):
        ref.tell("late")
    actor.gate.set()
    async with asyncio.timeout(WAIT):
        await stopping
    assert actor.seen == ["block", 0, 1, 2, 3, 4]
    assert answer.result() == 8  # an ask queued before the stop is still answered
    assert actor.stops == 1
    assert actor.log[-1] == "stop"  # after the last message
    assert actor.undelivered == []
    await registry.close(timeout=WAIT)
    await ref.stop()
    assert actor.stops == 1


# --- ask -------------------------------------------------------------------------------------


async def test_ask_returns_the_handlers_value(registry: ActorRegistry) -> None:
    ref = registry.spawn("a", Recorder())
    assert await ref.ask(("double", 21), timeout=WAIT) == 42


async def test_failed_ask_goes_back_to_the_caller_and_the_actor_keeps_working(
    registry: ActorRegistry,
) -> None:
    actor = Recorder()
    ref = registry.spawn("a", actor)
    with pytest.raises(Boom, match="bad request"):
        await ref.ask(("raise", Boom("bad request")), timeout=WAIT)
    ref.tell("after")
    assert await ref.ask("sync", timeout=WAIT) == ["after"]
    assert actor.starts == 1  # no crash, no restart
    assert ref.alive and registry.get("a") is ref


# --- supervision -----------------------------------------------------------------------------


async def test_a_failed_tell_restarts_the_actor_keeping_its_mailbox(
    registry: ActorRegistry,
) -> None:
    actor = Recorder()
    ref = registry.spawn("a", actor, budget=RestartBudget(max_restarts=3, window=60))
    ref.tell(1)
    ref.tell(("raise", Boom("crash")))
    ref.tell(2)
    ref.tell(3)
    assert await ref.ask("sync", timeout=WAIT) == [1, 2, 3]
    assert actor.starts == 2
    assert actor.log == ["start", "recv", "raise", "start", "recv", "recv"]
    assert actor.stops == 0  # a restart is not a stop
    assert registry.get("a") is ref


async def test_past_the_restart_budget_the_actor_escalates(registry: ActorRegistry) -> None:
    actor = Recorder()
    exits: list[ActorRef[Any]] = []
    ref = registry.spawn(
        "a", actor, budget=RestartBudget(max_restarts=1, window=60), on_exit=exits.append
    )
    ref.tell("block")
    async with asyncio.timeout(WAIT):
        await actor.entered.wait()
    ref.tell(("raise", Boom("first")))
    ref.tell(("raise", Boom("second")))
    ref.tell("x")
    ref.tell("y")
    pending = asyncio.ensure_future(ref.ask(("double", 5)))
    await asyncio.sleep(0)
    actor.gate.set()
    await stopped(ref)
    assert actor.starts == 2  # one restart allowed, the second crash escalates
    assert actor.seen == ["block"]
    assert isinstance(actor.undeliverable_reason, Boom)
    assert str(actor.undeliverable_reason) == "second"
    assert actor.undelivered[:2] == ["x", "y"]
    assert isinstance(actor.undelivered[2], Ask)
    with pytest.raises(ActorStopped):
        await pending
    assert actor.stops == 1
    assert exits == [ref]
    assert registry.get("a") is None and len(registry) == 0
    with pytest.raises(ActorStopped):
        ref.tell("z")


async def test_restart_budget_window() -> None:
    budget = RestartBudget(max_restarts=2, window=60)
    assert budget.allow() and budget.allow()
    assert not budget.allow()
    expired = RestartBudget(max_restarts=1, window=0.0)
    assert expired.allow()
    assert expired.allow()  # the earlier restart is outside a zero window


class StopsAtStart(Recorder):
    async def on_start(self) -> None:
        await super().on_start()
        raise StopActor("not wanted")


async def test_stop_actor_from_on_start_stops_without_restart(registry: ActorRegistry) -> None:
    actor = StopsAtStart()
    ref = registry.spawn("a", actor, budget=RestartBudget(max_restarts=5, window=60))
    ref.tell("m")
    pending = asyncio.ensure_future(ref.ask(("double", 1)))
    await stopped(ref)
    assert actor.starts == 1
    assert actor.seen == []
    assert isinstance(actor.undeliverable_reason, StopActor)
    assert actor.undelivered[0] == "m"
    with pytest.raises(ActorStopped):
        await pending
    assert actor.stops == 1
    assert registry.get("a") is None


class CrashesAtStart(Recorder):
    async def on_start(self) -> None:
        await super().on_start()
        raise Boom("start failed")


async def test_crashing_on_start_is_restarted_then_escalated(registry: ActorRegistry) -> None:
    actor = CrashesAtStart()
    ref = registry.spawn("a", actor, budget=RestartBudget(max_restarts=2, window=60))
    ref.tell("m")
    await stopped(ref)
    assert actor.starts == 3
    assert actor.undelivered == ["m"]
    assert registry.get("a") is None


# --- batching --------------------------------------------------------------------------------


class Batcher(Actor[int]):
    batch_size = 64

    def __init__(self, expected: int) -> None:
        self.batches: list[list[int]] = []
        self.expected = expected
        self.done = asyncio.Event()

    async def receive_batch(self, messages: list[int]) -> None:
        self.batches.append(list(messages))
        if sum(map(len, self.batches)) >= self.expected:
            self.done.set()


async def test_a_batch_actor_gets_everything_waiting_as_one_batch(
    registry: ActorRegistry,
) -> None:
    actor = Batcher(100)
    ref = registry.spawn("b", actor)
    for i in range(100):  # all told before the actor's task first runs
        ref.tell(i)
    async with asyncio.timeout(WAIT):
        await actor.done.wait()
    assert max(map(len, actor.batches)) > 1
    assert all(len(b) <= Batcher.batch_size for b in actor.batches)
    assert [m for b in actor.batches for m in b] == list(range(100))


class Poisonable(Actor[Any]):
    """A batch actor whose `receive_batch` raises when the run holds "poison"; asks are answered
    by `receive` ("block" waits on `gate`)."""

    batch_size = 100

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()
        self.runs: list[list[Any]] = []
        self.undelivered: list[Any] = []

    async def receive(self, message: Any) -> Any:
        if message == "block":
            self.entered.set()
            await self.gate.wait()
        return ("answer", message)

    async def receive_batch(self, messages: list[Any]) -> None:
        self.runs.append(list(messages))
        if "poison" in messages:
            raise Boom("poisoned batch")

    def undeliverable(self, messages: list[Any], reason: Exception) -> None:
        self.undelivered.extend(messages)
        super().undeliverable(messages, reason)


async def test_a_batch_that_raises_answers_every_ask_in_it(registry: ActorRegistry) -> None:
    actor = Poisonable()
    ref = registry.spawn("p", actor, budget=RestartBudget(max_restarts=3, window=60))
    blocker = asyncio.ensure_future(ref.ask("block"))
    async with asyncio.timeout(WAIT):
        await actor.entered.wait()
    ref.tell("poison")  # these four are taken as one batch once the blocker is answered
    ref.tell("x")
    after = asyncio.ensure_future(ref.ask("after"))
    await asyncio.sleep(0)  # let the ask reach the mailbox
    ref.tell("y")
    actor.gate.set()
    assert await asyncio.wait_for(blocker, WAIT) == ("answer", "block")
    with pytest.raises(ActorStopped, match="poisoned batch"):
        await asyncio.wait_for(after, WAIT)  # answered, not lost with the crashed batch
    assert actor.runs == [["poison", "x"]]
    assert actor.undelivered[1:] == ["y"] and isinstance(actor.undelivered[0], Ask)
    assert await ref.ask("later", timeout=WAIT) == ("answer", "later")  # restarted, serving


class BatchRecorder(Recorder):
    batch_size = 8  # relies on the default receive_batch, which calls receive


async def test_ask_to_a_batch_actor_is_answered(registry: ActorRegistry) -> None:
    ref = registry.spawn("b", BatchRecorder())
    assert await ref.ask(("double", 3), timeout=WAIT) == 6


# --- passivation -----------------------------------------------------------------------------


class Idle(Recorder):
    idle_timeout = 0.05

    def __init__(self, *, allowed: bool) -> None:
        super().__init__()
        self.allowed = allowed
        self.asked = 0
        self.asked_thrice = asyncio.Event()

    def may_passivate(self) -> bool:
        self.asked += 1
        if self.asked >= 3:
            self.asked_thrice.set()
        return self.allowed


async def test_an_idle_actor_passivates(registry: ActorRegistry) -> None:
    actor = Idle(allowed=True)
    ref = registry.spawn("p", actor)
    ref.tell(1)
    await stopped(ref)  # after idle_timeout without messages
    assert actor.seen == [1]
    assert actor.stops == 1
    assert registry.get("p") is None and len(registry) == 0
    with pytest.raises(ActorStopped):
        ref.tell(2)
    assert registry.spawn("p", Idle(allowed=False)) is not ref  # the key is free again


async def test_an_idle_actor_that_may_not_passivate_stays(registry: ActorRegistry) -> None:
    actor = Idle(allowed=False)
    ref = registry.spawn("p", actor)
    async with asyncio.timeout(WAIT):
        await actor.asked_thrice.wait()  # three idle periods went by
    assert ref.alive and registry.get("p") is ref
    ref.tell(1)
    assert await ref.ask("sync", timeout=WAIT) == [1]
    assert actor.stops == 0


# --- registry --------------------------------------------------------------------------------


async def test_spawning_a_running_key_is_refused(registry: ActorRegistry) -> None:
    registry.spawn("a", Recorder())
    with pytest.raises(ValueError):
        registry.spawn("a", Recorder())


class Stuck(Recorder):
    """An actor whose flush never finishes."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = asyncio.Event()
        self.cancelled = False

    async def on_stop(self) -> None:
        self.stopping.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise


async def test_registry_close_stops_all_and_cancels_a_stuck_one() -> None:
    registry = ActorRegistry("test")
    healthy = [Recorder() for _ in range(3)]
    refs = [registry.spawn(i, a) for i, a in enumerate(healthy)]
    for ref in refs:
        ref.tell("m")
    stuck = Stuck()
    stuck_ref = registry.spawn("stuck", stuck)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(WAIT + 1):
        await registry.close(timeout=0.2)
    assert loop.time() - started < WAIT
    assert stuck.stopping.is_set() and stuck.cancelled
    assert stuck_ref.task is not None and stuck_ref.task.done()
    for actor, ref in zip(healthy, refs, strict=True):
        assert actor.seen == ["m"] and actor.stops == 1
        assert ref.task is not None and ref.task.done()
    await stopped(stuck_ref)  # its stop future resolves even though it was cancelled
    assert len(registry) == 0
    with pytest.raises(ActorStopped):
        registry.spawn("late", Recorder())


# --- dormancy: no task while idle ----------------------------------------------------------------


class Dormant(Recorder):
    task_when_idle = False


class DormantIdle(Idle):
    task_when_idle = False


async def no_task(ref: ActorRef[Any]) -> None:
    """Wait (bounded) until the actor's task has ended with its mailbox empty."""
    async with asyncio.timeout(WAIT):
        while (task := ref.task) is not None:
            await task


async def test_an_idle_dormant_actor_holds_no_task_and_wakes_in_order(
    registry: ActorRegistry,
) -> None:
    actor = Dormant()
    ref = registry.spawn("d", actor)
    await no_task(ref)
    assert ref.alive and registry.get("d") is ref
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "test:d"]
    for n in range(5):
        ref.tell(n)
    assert ref.task is not None  # a message woke it
    assert await ref.ask("sync", timeout=WAIT) == [0, 1, 2, 3, 4]
    await no_task(ref)
    ref.tell(5)
    assert await ref.ask("sync", timeout=WAIT) == [0, 1, 2, 3, 4, 5]
    assert actor.starts == 1  # on_start once, not per wake-up
    assert actor.stops == 0


async def test_a_dormant_actor_restarts_after_a_crash_and_stops_on_close() -> None:
    registry = ActorRegistry("test")
    actor = Dormant()
    ref = registry.spawn("d", actor, budget=RestartBudget(max_restarts=1))
    await no_task(ref)
    ref.tell(("raise", Boom()))
    ref.tell("after")
    assert await ref.ask("sync", timeout=WAIT) == ["after"]
    assert actor.starts == 2
    await no_task(ref)
    async with asyncio.timeout(WAIT):
        await registry.close(timeout=WAIT)  # wakes the dormant actor to drain and stop
    await stopped(ref)
    assert actor.stops == 1 and len(registry) == 0


async def test_a_dormant_idle_actor_passivates_by_timer(registry: ActorRegistry) -> None:
    actor = DormantIdle(allowed=True)
    ref = registry.spawn("p", actor)
    ref.tell(1)
    await stopped(ref)
    assert actor.seen == [1] and actor.stops == 1
    assert registry.get("p") is None


async def test_a_dormant_idle_actor_that_may_not_passivate_stays(registry: ActorRegistry) -> None:
    actor = DormantIdle(allowed=False)
    ref = registry.spawn("p", actor)
    await no_task(ref)
    await asyncio.sleep(DormantIdle.idle_timeout * 3)  # three idle periods: nothing happens
    assert ref.alive and ref.task is None and registry.get("p") is ref
    ref.tell(1)
    assert await ref.ask("sync", timeout=WAIT) == [1]
    actor.allowed = True  # decided anew when it next goes idle (after the next message)
    ref.tell(2)
    await stopped(ref)  # idle once more, and now it may passivate
    assert actor.seen == [1, 2] and actor.stops == 1
