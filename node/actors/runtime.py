"""The actor runtime: a bounded mailbox, one task, three phases.

An `Actor` holds behaviour and state; the `ActorRef` returned by `ActorRegistry.spawn` is the only
handle to it. Guarantees:

* `tell` never blocks and never queues without bound: a full mailbox raises `MailboxFull`, a
  stopped actor raises `ActorStopped`. Messages from one caller are handled in the order told.
* start: `on_start` runs in the actor's task before any message. run: messages are handled one at
  a time, or in batches of up to `batch_size` (everything already waiting, for group commit).
  drain: after `stop()` the mailbox refuses new messages, the ones already in it are still
  handled, then `on_stop` runs (flush what the actor holds).
* A handler that raises crashes the actor; its `RestartBudget` decides: restart (`on_start` again,
  the mailbox kept) or, past the budget, escalate (the actor stops). An `ask` whose handler raises
  fails back to the caller and does not crash the actor.
* Passivation: an actor idle for `idle_timeout` whose `may_passivate()` is true stops itself. The
  idle check and the closing of its mailbox happen without yielding, so no message is lost.
* Dormancy: an actor with `task_when_idle = False` holds no task while its mailbox is empty (most
  of a node's user actors, most of the time): its task ends once the mailbox is empty and a new
  one starts when a message (or a stop) arrives. Order, batching and the phases are the same;
  `on_start` runs once per start or restart, not per wake-up. Its idle timeout is a timer, armed
  when it goes idle only if `may_passivate()` is true then (what decides it must change only
  while the actor handles a message: an actor that may not passivate holds nothing at all).
* Every message the actor took but did not handle goes to `undeliverable`: what was left in the
  mailbox when it terminates (escalation, start failure, stop on purpose), and the rest of a batch
  whose handler raised part-way. The default fails pending asks with `ActorStopped`; actors that
  hold requests of their own (a chat actor's sends) answer them there. The messages a raising
  handler was given are that handler's to answer: it failed while holding them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from node.actors.mailbox import ActorError as ActorError
from node.actors.mailbox import ActorStopped as ActorStopped
from node.actors.mailbox import Mailbox
from node.actors.mailbox import MailboxFull as MailboxFull

log = logging.getLogger(__name__)

M = TypeVar("M")


class StopActor(Exception):
    """Raised by a handler or `on_start` to stop the actor on purpose (no restart, no escalation);
    what is left in its mailbox goes to `undeliverable`."""


@dataclass(slots=True)
class Ask:
    """A request whose answer goes back to the caller's future."""

    message: Any
    future: asyncio.Future[Any]


@dataclass(slots=True)
class RestartBudget:
    """At most `max_restarts` restarts within `window` seconds; past that, escalate."""

    max_restarts: int = 3
    window: float = 30.0
    _restarts: deque[float] | None = None  # made at the first crash: most actors never crash

    def allow(self) -> bool:
        if self._restarts is None:
            self._restarts = deque()
        now = time.monotonic()
        while self._restarts and now - self._restarts[0] > self.window:
            self._restarts.popleft()
        if len(self._restarts) >= self.max_restarts:
            return False
        self._restarts.append(now)
        return True


class Actor(Generic[M]):
    """Subclass and implement `receive` (or `receive_batch` with `batch_size` > 1). `ref` is the
    actor's own handle, set when it is spawned (e.g. to be told something by a timer)."""

    __slots__ = ("ref",)

    ref: ActorRef[M]

    mailbox_size: int = 1000
    batch_size: int = 1
    idle_timeout: float | None = None
    task_when_idle: bool = True  # False: no task while the mailbox is empty (see the module doc)

    async def on_start(self) -> None:
        """Start phase: acquire what the actor needs. Raising counts as a crash."""

    async def receive(self, message: M) -> Any:
        raise NotImplementedError

    async def receive_batch(self, messages: list[M]) -> None:
        for message in messages:
            await self.receive(message)

    async def on_stop(self) -> None:
        """Drain phase, after the last message: flush and release. Bounded by the registry."""

    def may_passivate(self) -> bool:
        return True

    def undeliverable(self, messages: list[Any], reason: Exception) -> None:
        for message in messages:
            if isinstance(message, Ask) and not message.future.done():
                message.future.set_exception(ActorStopped(str(reason)))
        if messages:
            log.warning(
                "actor.undeliverable", extra={"count": len(messages), "reason": str(reason)}
            )


class ActorRef(Generic[M]):
    """The only handle to an actor."""

    __slots__ = ("_done", "_mailbox", "_stopped", "key", "task")

    def __init__(self, key: Hashable, mailbox: Mailbox) -> None:
        self.key = key
        self._mailbox = mailbox
        self._done = False
        self._stopped: asyncio.Future[None] | None = None  # made when someone waits
        self.task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<ActorRef {self.key!r}>"

    @property
    def alive(self) -> bool:
        return not self._mailbox.closed

    @property
    def mailbox_depth(self) -> int:
        return len(self._mailbox)

    def tell(self, message: M) -> None:
        """Enqueue without waiting. Raises MailboxFull or ActorStopped."""
        self._mailbox.put(message)

    async def ask(self, message: M, timeout: float | None = None) -> Any:
        """Send and wait for the handler's return value (or its exception)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._mailbox.put(Ask(message, future))
        if timeout is None:
            return await future
        return await asyncio.wait_for(future, timeout)

    def request_stop(self) -> None:
        """Refuse new messages; the actor drains what it holds and stops."""
        self._mailbox.close()

    async def stop(self) -> None:
        self.request_stop()
        await self.wait_stopped()

    async def wait_stopped(self) -> None:
        if self._done:
            return
        if self._stopped is None:
            self._stopped = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._stopped)

    def _set_stopped(self) -> None:
        self._done = True
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)


class ActorRegistry:
    """The node's live actors by key; owns their tasks and stops them all on `close`."""

    def __init__(self, name: str = "actors") -> None:
        self._name = name
        self._refs: dict[Hashable, ActorRef[Any]] = {}
        self._closing = False

    def __len__(self) -> int:
        return len(self._refs)

    def get(self, key: Hashable) -> ActorRef[Any] | None:
        ref = self._refs.get(key)
        return ref if ref is not None and ref.alive else None

    def refs(self) -> list[ActorRef[Any]]:
        return list(self._refs.values())

    def spawn(
        self,
        key: Hashable,
        actor: Actor[M],
        *,
        budget: RestartBudget | None = None,
        on_exit: Callable[[ActorRef[M]], None] | None = None,
    ) -> ActorRef[M]:
        if self._closing:
            raise ActorStopped(f"{self._name} registry is closing")
        if self.get(key) is not None:
            raise ValueError(f"actor {key!r} already running")
        mailbox = Mailbox(actor.mailbox_size)
        ref: ActorRef[M] = ActorRef(key, mailbox)
        actor.ref = ref
        self._refs[key] = ref
        self._activate(_Cell(self, ref, actor, mailbox, budget, on_exit))
        return ref

    def _activate(self, cell: _Cell) -> None:
        cell.ref.task = asyncio.get_running_loop().create_task(
            self._run(cell), name=f"{self._name}:{cell.ref.key}"
        )

    async def close(self, timeout: float) -> None:
        """Stop every actor (each drains its mailbox and runs on_stop), bounded by timeout."""
        self._closing = True
        refs = list(self._refs.values())
        for ref in refs:
            ref.request_stop()
        tasks = [ref.task for ref in refs if ref.task is not None]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning(
                "actors.stop_timeout", extra={"registry": self._name, "count": len(pending)}
            )
            await asyncio.wait(pending)

    async def _run(self, cell: _Cell) -> None:
        reason: Exception = ActorStopped("stopped")
        try:
            outcome = await self._live(cell)
            if outcome is None:
                return  # dormant: the cell wakes the actor with its next message
            reason = outcome
        except asyncio.CancelledError:
            await self._terminate(cell, reason)
            raise
        await self._terminate(cell, reason)

    async def _live(self, cell: _Cell) -> Exception | None:
        """Start (or restart) and handle messages; the reason to stop, or None when the actor
        went dormant (its mailbox empty, its task about to end)."""
        ref, actor, mailbox = cell.ref, cell.actor, cell.mailbox
        while True:
            try:
                if not cell.started:
                    await actor.on_start()
                    cell.started = True
                if await self._handle_until_stopped(actor, mailbox):
                    cell.sleep()  # no await between the empty mailbox and this
                    return None
                return ActorStopped("stopped")
            except asyncio.CancelledError:
                raise
            except StopActor as exc:
                return exc
            except Exception as exc:
                cell.started = False
                if cell.budget is None:  # made at the first crash: most actors never crash
                    cell.budget = RestartBudget()
                if mailbox.closed or not cell.budget.allow():
                    log.error(
                        "actor.escalated",
                        exc_info=exc,
                        extra={"actor": str(ref.key), "registry": self._name},
                    )
                    return exc
                log.warning("actor.restarted", exc_info=exc, extra={"actor": str(ref.key)})

    async def _terminate(self, cell: _Cell, reason: Exception) -> None:
        ref, actor, mailbox = cell.ref, cell.actor, cell.mailbox
        cell.cancel_timer()
        mailbox.sleeper = None
        mailbox.close()
        if self._refs.get(ref.key) is ref:
            del self._refs[ref.key]
        leftovers = mailbox.take(len(mailbox))
        try:
            if leftovers:
                actor.undeliverable(leftovers, reason)
            await actor.on_stop()
        except Exception:
            log.exception("actor.stop_failed", extra={"actor": str(ref.key)})
        finally:
            if cell.on_exit is not None:
                cell.on_exit(ref)
            ref._set_stopped()

    async def _handle_until_stopped(self, actor: Actor[Any], mailbox: Mailbox) -> bool:
        """Until the mailbox is closed and drained (False), or, for an actor that holds no task
        while idle, until it is empty (True)."""
        batch_size = actor.batch_size
        while True:
            if not actor.task_when_idle and not mailbox and not mailbox.closed:
                return True
            if not await mailbox.wait(actor.idle_timeout):
                if actor.may_passivate():
                    mailbox.close()  # no await between the idle check and this
                    return False
                continue
            batch = mailbox.take(batch_size)
            if not batch:  # closed and drained
                return False
            if batch_size == 1:
                message = batch[0]
                if isinstance(message, Ask):
                    await self._answer(actor, message)
                else:
                    await actor.receive(message)
                continue
            await self._handle_batch(actor, batch)

    @staticmethod
    async def _handle_batch(actor: Actor[Any], batch: list[Any]) -> None:
        """Plain messages in runs handed to `receive_batch`; each ask answered in its turn. If a
        run's handler raises, what comes after it in the batch goes to `undeliverable` before
        the crash is reported (the handler itself answers for the run it was given)."""
        start = 0
        for end, message in enumerate([*batch, None]):
            if end < len(batch) and not isinstance(message, Ask):
                continue
            if end > start:
                try:
                    await actor.receive_batch(batch[start:end])
                except asyncio.CancelledError:
                    actor.undeliverable(batch[end:], ActorStopped("cancelled"))
                    raise
                except Exception as exc:
                    actor.undeliverable(batch[end:], exc)
                    raise
            if end < len(batch):
                await ActorRegistry._answer(actor, message)
            start = end + 1

    @staticmethod
    async def _answer(actor: Actor[Any], ask: Ask) -> None:
        try:
            result = await actor.receive(ask.message)
        except asyncio.CancelledError:
            if not ask.future.done():
                ask.future.set_exception(ActorStopped("cancelled"))
            raise
        except Exception as exc:
            if not ask.future.done():
                ask.future.set_exception(exc)
            return
        if not ask.future.done():
            ask.future.set_result(result)


class _Cell:
    """An actor's running state, kept by its registry: what a dormant actor needs to wake."""

    __slots__ = ("actor", "budget", "mailbox", "on_exit", "ref", "registry", "started", "timer")

    def __init__(
        self,
        registry: ActorRegistry,
        ref: ActorRef[Any],
        actor: Actor[Any],
        mailbox: Mailbox,
        budget: RestartBudget | None,
        on_exit: Callable[[ActorRef[Any]], None] | None,
    ) -> None:
        self.registry = registry
        self.ref = ref
        self.actor = actor
        self.mailbox = mailbox
        self.budget = budget
        self.on_exit = on_exit
        self.started = False
        self.timer: asyncio.TimerHandle | None = None

    def sleep(self) -> None:
        """The actor's task ends now; the next put or close wakes it (and the idle timeout,
        if any and the actor may passivate, is a timer meanwhile)."""
        self.ref.task = None
        self.mailbox.sleeper = self
        timeout = self.actor.idle_timeout
        if timeout is not None and self.actor.may_passivate():
            self.timer = asyncio.get_running_loop().call_later(timeout, self._idle)

    def wake(self) -> None:
        self.mailbox.sleeper = None
        self.cancel_timer()
        self.registry._activate(self)

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _idle(self) -> None:
        self.timer = None
        if self.mailbox.sleeper is not self:
            return
        if self.actor.may_passivate():
            self.mailbox.close()  # wakes the actor to drain (nothing) and stop
