"""The supervisor of the node's loops: a crashed part is restarted after a back-off and named as
failing meanwhile; past its budget it is given up, stays failing, and `on_fatal` runs once."""

from __future__ import annotations

import asyncio

import pytest

from node.supervisor import Supervisor

WAIT = 5.0


async def test_a_crashed_part_is_restarted_and_named_while_down() -> None:
    runs = 0
    second_run = asyncio.Event()
    release = asyncio.Event()

    async def part() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("crash")
        second_run.set()
        await release.wait()
        await asyncio.Event().wait()  # then runs until cancelled

    supervisor = Supervisor(backoff=0.2)
    try:
        await supervisor.start("worker", part)
        await asyncio.sleep(0.05)  # inside the 0.2 s back-off: nothing else to await here
        assert supervisor.failing() == ["worker"]
        await asyncio.wait_for(second_run.wait(), WAIT)
        assert supervisor.failing() == [] and supervisor.restarts("worker") == 1
    finally:
        await supervisor.close()


async def test_past_its_budget_a_part_is_given_up_and_on_fatal_runs_once() -> None:
    fatal: list[str] = []
    gave_up = asyncio.Event()

    def on_fatal(name: str) -> None:
        fatal.append(name)
        gave_up.set()

    async def broken() -> None:
        raise RuntimeError("always")

    async def healthy() -> None:
        await asyncio.Event().wait()

    supervisor = Supervisor(on_fatal=on_fatal, backoff=0.01, max_restarts=3)
    try:
        await supervisor.start("healthy", healthy)
        await supervisor.start("broken", broken)
        await asyncio.wait_for(gave_up.wait(), WAIT)
        assert fatal == ["broken"] and supervisor.restarts("broken") == 3
        assert supervisor.failing() == ["broken"]
    finally:
        await supervisor.close()


async def test_a_loop_that_returns_is_a_crash_and_close_stops_everything() -> None:
    started = 0
    restarted = asyncio.Event()
    cancelled = asyncio.Event()

    async def returns() -> None:
        nonlocal started
        started += 1
        if started == 2:
            restarted.set()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    supervisor = Supervisor(backoff=0.01, max_restarts=2)
    await supervisor.start("returns", returns)
    await supervisor.start("forever", forever)
    await supervisor.wait_started("forever")
    await asyncio.wait_for(restarted.wait(), WAIT)  # returning counted as a crash: restarted
    with pytest.raises(ValueError, match="already started"):
        await supervisor.start("forever", forever)
    await supervisor.close()
    assert cancelled.is_set()
