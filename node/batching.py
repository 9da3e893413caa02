"""Coalescing of concurrent requests into batched calls, adaptively.

A `Batcher` serves requests through one function that takes many at once (one SQL statement over
arrays, one pipelined round trip). It never waits on purpose: a request made while the batcher is
idle goes out on the next turn of the event loop, with whatever else was requested in the same
turn. While `parallel` calls are in flight, requests queue and the next call carries them all (up
to `max_batch`). So an idle node pays no added latency, and a connect storm of N devices costs
about N / max_batch calls instead of N.

Guarantees:

* Every request gets its own result, or its own exception, exactly once; the result of request
  `r` is `serve(batch)[i]` where `batch[i] is r`.
* A failing request fails only itself. `serve` may return an exception in a request's place; when
  a call raises, its batch is split in halves and each half is served again, down to single
  requests, so only the request(s) that make the call fail get the exception. Exceptions listed in
  `whole_batch` (the backend is unreachable: every request would fail alike) fail the batch at once.
* The batcher owns the tasks that run its calls. `aclose` cancels them and fails every request
  still waiting with `BatcherClosed`; a caller that stops waiting (is cancelled) leaves the batch
  unharmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")


class BatcherClosed(RuntimeError):
    """The batcher was closed before this request was served."""


class Batcher(Generic[Req, Res]):
    def __init__(
        self,
        serve: Callable[[Sequence[Req]], Awaitable[Sequence[Res | BaseException]]],
        *,
        name: str,
        max_batch: int = 500,
        parallel: int = 2,
        whole_batch: tuple[type[BaseException], ...] = (),
    ) -> None:
        if max_batch < 1 or parallel < 1:
            raise ValueError("max_batch and parallel must be at least 1")
        self._serve = serve
        self.name = name
        self._max_batch = max_batch
        self._parallel = parallel
        self._whole_batch = whole_batch
        self._waiting: deque[tuple[Req, asyncio.Future[Res]]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._closed = False
        self.calls = 0  # calls of `serve` (retries of a split batch included)
        self.requests = 0  # requests served (with a result or an exception)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def __call__(self, request: Req) -> Res:
        """`request`'s result, served with whatever else is requested meanwhile."""
        if self._closed:
            raise BatcherClosed(f"{self.name}: closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Res] = loop.create_future()
        self._waiting.append((request, future))
        if not self._scheduled and len(self._tasks) < self._parallel:
            self._scheduled = True
            loop.call_soon(self._dispatch)
        return await future

    def _dispatch(self) -> None:
        """Start calls for what is waiting, as many as `parallel` allows."""
        self._scheduled = False
        while self._waiting and len(self._tasks) < self._parallel and not self._closed:
            batch: list[tuple[Req, asyncio.Future[Res]]] = []
            while self._waiting and len(batch) < self._max_batch:
                request, future = self._waiting.popleft()
                if not future.done():  # its caller stopped waiting: nothing to serve
                    batch.append((request, future))
            if not batch:
                continue
            task = asyncio.get_running_loop().create_task(
                self._run(batch), name=f"batcher:{self.name}"
            )
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._waiting and not self._scheduled and not self._closed:
            self._dispatch()

    async def _run(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        try:
            await self._serve_split(batch)
        except asyncio.CancelledError:
            for _, future in batch:
                if not future.done():
                    future.set_exception(BatcherClosed(f"{self.name}: closed"))
            raise

    async def _serve_split(self, batch: list[tuple[Req, asyncio.Future[Res]]]) -> None:
        self.calls += 1
        try:
            results = await self._serve([request for request, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} requests")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if len(batch) == 1 or isinstance(exc, self._whole_batch):
                self._fail(batch, exc)
                return
            middle = len(batch) // 2
            log.info(
                "batcher.split",
                extra={"batcher": self.name, "size": len(batch), "error": repr(exc)},
            )
            await self._serve_split(batch[:middle])
            await self._serve_split(batch[middle:])
            return
        self.requests += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def _fail(self, batch: list[tuple[Req, asyncio.Future[Res]]], exc: BaseException) -> None:
        self.requests += len(batch)
        for _, future in batch:
            if not future.done():
                future.set_exception(exc)

    async def aclose(self) -> None:
        """Stop: cancel the calls in flight, fail every waiting request (BatcherClosed)."""
        self._closed = True
        while self._waiting:
            _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(BatcherClosed(f"{self.name}: closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
