"""The node's collector schedule (`node.gc_schedule`): short stops, garbage still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from node import gc_schedule


@pytest.fixture
def tuned() -> Iterator[None]:
    before = gc.get_threshold()
    gc_schedule.tune()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_tune_freezes_the_startup_heap(tuned: None) -> None:
    assert gc.get_freeze_count() > 0


def test_a_middle_collection_scans_a_bounded_number_of_objects(tuned: None) -> None:
    young, middle, _ = gc.get_threshold()
    # every stop delays every message in flight: a middle collection scans up to young * middle
    # survivors; a million (50,000 * 20) stopped the loop ~440 ms at 10,000 sockets
    assert young * middle == gc_schedule.MAX_MIDDLE_SCAN <= 50_000
    assert young >= 700  # not more often than CPython's default


def test_cyclic_garbage_is_still_collected_without_an_explicit_collect(tuned: None) -> None:
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    gone = weakref.ref(a)
    del a, b
    young, middle, _ = gc.get_threshold()
    keep = []
    for _ in range(young * (middle + 2)):  # net allocations: enough for a middle collection
        keep.append([])
        if gone() is None:
            break
    assert gone() is None
