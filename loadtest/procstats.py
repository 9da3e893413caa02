"""CPU, memory and kernel counters of the processes the bench measures, as psutil and /proc see
them: `cpu_seconds` / `cpu_by_pid` / `rss_bytes` / `hwm_bytes` over process trees, `Sampler` (a
thread sampling RSS), and `listen_overflows` (the machine's dropped-handshake counter)."""

from __future__ import annotations

import contextlib
import threading
import time

import psutil  # type: ignore[import-untyped,unused-ignore]


def tree(pids: list[int]) -> list[psutil.Process]:
    out: list[psutil.Process] = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            p = psutil.Process(pid)
            out.append(p)
            out.extend(p.children(recursive=True))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """user + system CPU of the processes and their live children."""
    total = 0.0
    for p in tree(pids):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """user + system CPU of each process of the trees."""
    out = {}
    for p in tree(pids):
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used in between by the processes alive at the end (new ones count whole; ones that
    exited meanwhile, such as the PostgreSQL backends of a killed node, are left out)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in tree(pids):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def hwm_bytes(pids: list[int]) -> int:
    """Sum of each process's peak RSS since it started (VmHWM)."""
    total = 0
    for p in tree(pids):
        with contextlib.suppress(OSError), open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


class Sampler(threading.Thread):
    """Samples rss_bytes(pids) every `interval` s into `samples` [(perf_counter s, bytes)]."""

    def __init__(self, pids: list[int], interval: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.interval = pids, interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while True:
            self.samples.append((time.perf_counter(), rss_bytes(self.pids)))
            if self._halt.wait(self.interval):
                return

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join(5)
        self.samples.append((time.perf_counter(), rss_bytes(self.pids)))
        return self.samples


def listen_overflows() -> int | None:
    """This machine's count of connections dropped because a listen queue was full (TcpExt
    ListenOverflows: the accept backlog of a server overflowed during a connect storm)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
        for names, values in zip(lines[::2], lines[1::2], strict=False):
            if names.startswith("TcpExt:"):
                table = dict(zip(names.split()[1:], values.split()[1:], strict=True))
                return int(table["ListenOverflows"])
    return None


def delta(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before
