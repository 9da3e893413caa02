"""The node's long-lived loops under one owner.

Every background loop of the node (membership heartbeats, lease renewal, the inbox subscriber,
the commit pipeline, ack flushing, outbound delivery, ...) is a named *part* started here. The
supervisor runs each part as an aiojobs job and guarantees:

* A part that raises (or returns, which a loop never should) is logged with its traceback and
  restarted after a back-off that doubles from `backoff` up to `max_backoff`; a part that ran for
  `stable_after` seconds since its last start counts as healthy again (back-off and budget reset).
* While a part waits for its restart, `failing()` names it, so `/healthz` answers 503 naming it.
* Past its restart budget (`max_restarts` within `window` seconds) a part is given up for good: it
  stays in `failing()` and `on_fatal` is called once, which in a served node stops it gracefully
  (the operator's supervisor starts a fresh one). A node is never green while a part is dead.
* `close()` cancels every part and waits for them, bounded by `close_timeout`.

The restart policy is ours; aiojobs owns the tasks (spawn, close with a timeout, failures of
jobs nobody awaits still reported).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiojobs

from node.actors.runtime import RestartBudget

log = logging.getLogger(__name__)

PartFactory = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _Part:
    name: str
    factory: PartFactory
    budget: RestartBudget
    restarts: int = 0
    down: bool = False
    given_up: bool = False
    started: asyncio.Event = field(default_factory=asyncio.Event)


class Supervisor:
    def __init__(
        self,
        *,
        on_fatal: Callable[[str], None] | None = None,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        stable_after: float = 10.0,
        max_restarts: int = 10,
        window: float = 60.0,
        close_timeout: float = 5.0,
    ) -> None:
        self._on_fatal = on_fatal
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._stable_after = stable_after
        self._max_restarts = max_restarts
        self._window = window
        self._close_timeout = close_timeout
        self._parts: dict[str, _Part] = {}
        self._scheduler: aiojobs.Scheduler | None = None

    def failing(self) -> list[str]:
        """The parts that are not running now (waiting for a restart, or given up)."""
        return [p.name for p in self._parts.values() if p.down or p.given_up]

    def restarts(self, name: str) -> int:
        return self._parts[name].restarts

    async def start(self, name: str, factory: PartFactory) -> None:
        """Run `factory()` as the part `name`, restarted as the module doc says."""
        if name in self._parts:
            raise ValueError(f"part {name!r} already started")
        if self._scheduler is None:
            self._scheduler = aiojobs.Scheduler(close_timeout=self._close_timeout, limit=None)
        part = _Part(name, factory, RestartBudget(self._max_restarts, self._window))
        self._parts[name] = part
        await self._scheduler.spawn(self._supervise(part))

    async def wait_started(self, name: str) -> None:
        await self._parts[name].started.wait()

    async def close(self) -> None:
        if self._scheduler is not None:
            await self._scheduler.close()

    async def _supervise(self, part: _Part) -> None:
        backoff = self._backoff
        while True:
            started_at = time.monotonic()
            part.down = False
            part.started.set()
            try:
                await part.factory()
                error: BaseException = RuntimeError("the loop returned")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            part.down = True
            if time.monotonic() - started_at >= self._stable_after:
                backoff = self._backoff
                part.budget = RestartBudget(self._max_restarts, self._window)
            if not part.budget.allow():
                part.given_up = True
                log.critical(
                    "supervisor.gave_up",
                    exc_info=error,
                    extra={"part": part.name, "restarts": part.restarts},
                )
                if self._on_fatal is not None:
                    self._on_fatal(part.name)
                return
            log.error(
                "supervisor.part_crashed",
                exc_info=error,
                extra={"part": part.name, "restart_in": round(backoff, 3)},
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
            part.restarts += 1
            log.info("supervisor.part_restarted", extra={"part": part.name})
