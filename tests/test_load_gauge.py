"""The load gauge that adaptive batching (group commit, outbound fan-out) waits on: a rate
measured over a short window, zero once arrivals stop, so a quiet node never lingers."""

from __future__ import annotations

import time

from node.load_gauge import LoadGauge


def test_a_burst_reads_as_a_high_rate_and_quiet_reads_as_zero() -> None:
    gauge = LoadGauge(window=0.02)
    assert gauge.current() == 0.0
    end = time.monotonic() + 0.05
    while time.monotonic() < end:
        gauge.arrived()
    assert gauge.current() > 10_000  # thousands per window: far above any linger threshold
    time.sleep(0.05)  # two windows without an arrival
    assert gauge.current() == 0.0


def test_a_trickle_reads_as_a_low_rate() -> None:
    gauge = LoadGauge(window=0.02)
    for _ in range(4):
        gauge.arrived()
        time.sleep(0.011)
    assert gauge.current() < 300
