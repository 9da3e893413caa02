"""Child processes that are the node's own: out of the terminal's reach, never outliving it.

What is guaranteed for a child started with :func:`spawn`:

* It runs in a session (and so a process group) of its own: a Ctrl-C in the terminal, which is
  SIGINT to the terminal's whole foreground process group, reaches the parent only, and the
  parent decides when and how its children stop.
* On Linux it gets ``death_signal`` when the parent dies, however it dies (SIGKILL included):
  ``PR_SET_PDEATHSIG``, set in the child between fork and exec. That signal fires when the
  *thread* that forked the child exits, not the process, so every child is forked by one thread
  that lives as long as the process (a pool thread that exits when idle would signal the child
  early). A parent that is already gone when the child gets to set it is caught too (the child
  then sends itself the signal). Elsewhere (macOS) children rely on their parent's orderly stop.
"""

from __future__ import annotations

import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _death_signal_setup(signum: int) -> Callable[[], None] | None:
    """A preexec function that asks the kernel for ``signum`` when our forking thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
    parent = os.getpid()

    def setup() -> None:  # runs in the child between fork and exec: no locks, no allocation
        if prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            os._exit(127)
        if os.getppid() != parent:  # the parent died before the request was in place
            os.kill(os.getpid(), signum)

    return setup


class _Forker:
    """Runs every fork on one daemon thread, started on first use and never stopped: its life
    is the process's, which is what PR_SET_PDEATHSIG needs."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, job: Callable[[], Any]) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="forker", daemon=True)
                self._thread.start()
        done: Future[Any] = Future()
        self._jobs.put((job, done))
        return done.result()

    def _run(self) -> None:
        while True:
            job, done = self._jobs.get()
            try:
                done.set_result(job())
            except BaseException as exc:  # handed to the caller
                done.set_exception(exc)


_forker = _Forker()


def spawn(
    args: Sequence[str], *, death_signal: int = signal.SIGTERM, **popen: Any
) -> subprocess.Popen[bytes]:
    """Start ``args`` in a session of its own, to get ``death_signal`` if this process dies.

    ``popen`` goes to :class:`subprocess.Popen` (not ``start_new_session`` or ``preexec_fn``).
    Safe to call from any thread, the event loop's included (a fork takes milliseconds).
    """
    setup = _death_signal_setup(int(death_signal))

    def fork() -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(args), start_new_session=True, preexec_fn=setup, **popen)

    process: subprocess.Popen[bytes] = _forker.call(fork)
    return process
