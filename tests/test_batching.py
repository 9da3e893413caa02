"""`node.batching.Batcher`: concurrent requests coalesce into one call, an idle batcher adds no
wait, a failing request fails only itself, and the batcher owns (and stops) its calls."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from node.batching import Batcher, BatcherClosed


class Recorder:
    """A `serve` function: doubles each request, remembers every batch it got; a request equal
    to `poison` makes the whole call raise ValueError; `gate` (when set) holds calls."""

    def __init__(self, poison: int | None = None) -> None:
        self.batches: list[list[int]] = []
        self.poison = poison
        self.gate: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def __call__(self, requests: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(requests))
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.poison in requests:
            raise ValueError(f"cannot serve {self.poison}")
        return [r * 2 for r in requests]


async def test_concurrent_requests_are_served_by_one_call() -> None:
    serve = Recorder()
    batcher = Batcher[int, int](serve, name="t", max_batch=1000)
    results = await asyncio.gather(*(batcher(i) for i in range(300)))
    assert results == [i * 2 for i in range(300)]
    assert len(serve.batches) == 1 and sorted(serve.batches[0]) == list(range(300))
    assert batcher.calls == 1 and batcher.requests == 300


async def test_an_idle_batcher_serves_at_once_and_queues_while_busy() -> None:
    serve = Recorder()
    serve.gate = asyncio.Event()
    batcher = Batcher[int, int](serve, name="t", parallel=1)
    first = asyncio.ensure_future(batcher(1))
    await serve.started.wait()  # served alone, without waiting for company
    assert serve.batches == [[1]]
    later = [asyncio.ensure_future(batcher(i)) for i in range(2, 50)]
    await asyncio.sleep(0)
    assert serve.batches == [[1]]  # one call in flight (parallel=1): the rest wait for it
    serve.gate.set()
    assert await first == 2
    assert await asyncio.gather(*later) == [i * 2 for i in range(2, 50)]
    assert serve.batches == [[1], list(range(2, 50))]  # ... and then go together


async def test_batches_are_capped_at_max_batch() -> None:
    serve = Recorder()
    batcher = Batcher[int, int](serve, name="t", max_batch=10, parallel=1)
    assert await asyncio.gather(*(batcher(i) for i in range(35))) == [i * 2 for i in range(35)]
    assert [len(b) for b in serve.batches] == [10, 10, 10, 5]


async def test_a_failing_request_fails_only_itself() -> None:
    serve = Recorder(poison=13)
    batcher = Batcher[int, int](serve, name="t")
    results = await asyncio.gather(*(batcher(i) for i in range(40)), return_exceptions=True)
    assert isinstance(results[13], ValueError)
    assert [r for i, r in enumerate(results) if i != 13] == [i * 2 for i in range(40) if i != 13]
    assert batcher.calls <= 2 * 6 + 1  # halved down to the culprit: O(log n) calls, not n


async def test_an_exception_in_a_requests_place_fails_only_that_request() -> None:
    async def serve(requests: Sequence[int]) -> list[int | BaseException]:
        return [KeyError(r) if r % 2 else r for r in requests]

    batcher = Batcher[int, int](serve, name="t")
    results = await asyncio.gather(*(batcher(i) for i in range(6)), return_exceptions=True)
    assert results[0::2] == [0, 2, 4]
    assert all(isinstance(r, KeyError) for r in results[1::2])
    assert batcher.calls == 1


async def test_whole_batch_errors_fail_the_batch_without_splitting() -> None:
    async def serve(requests: Sequence[int]) -> list[int | BaseException]:
        raise ConnectionRefusedError("database down")

    batcher = Batcher[int, int](serve, name="t", whole_batch=(OSError,))
    results = await asyncio.gather(*(batcher(i) for i in range(50)), return_exceptions=True)
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    assert batcher.calls == 1


async def test_a_caller_that_stops_waiting_leaves_the_batch_unharmed() -> None:
    serve = Recorder()
    serve.gate = asyncio.Event()
    batcher = Batcher[int, int](serve, name="t", parallel=1)
    first = asyncio.ensure_future(batcher(1))
    await serve.started.wait()
    waiting = [asyncio.ensure_future(batcher(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    waiting[1].cancel()
    serve.gate.set()
    assert await first == 2
    assert [await waiting[0], await waiting[2]] == [4, 8]
    assert serve.batches == [[1], [2, 4]]  # the cancelled request was not served


async def test_aclose_cancels_calls_in_flight_and_fails_waiting_requests() -> None:
    serve = Recorder()
    serve.gate = asyncio.Event()  # never set: the call hangs until cancelled
    batcher = Batcher[int, int](serve, name="t", parallel=1)
    in_flight = asyncio.ensure_future(batcher(1))
    await serve.started.wait()
    queued = asyncio.ensure_future(batcher(2))
    await asyncio.sleep(0)
    assert batcher.in_flight == 1
    await batcher.aclose()
    assert batcher.in_flight == 0
    for request in (in_flight, queued):
        with pytest.raises(BatcherClosed):
            await request
    with pytest.raises(BatcherClosed):
        await batcher(3)


async def test_a_wrong_number_of_results_is_an_error_not_a_mixup() -> None:
    async def serve(requests: Sequence[int]) -> list[int | BaseException]:
        return [1]

    batcher = Batcher[int, int](serve, name="t")
    # 3 requests, 1 result: never zipped short; split until each call has one request
    assert await asyncio.gather(*(batcher(i) for i in range(3))) == [1, 1, 1]
    assert batcher.calls == 5  # [0,1,2] -> [0] + [1,2] -> [1] + [2]
