"""Load-generator worker processes, stepped through named phases together.

The parent spawns K workers (`Workers`), each running one coroutine under uvloop (`worker_entry`).
A worker reports the end of a phase with `await phase.report(name, payload)`; the parent collects
every worker's payload with `Workers.gather(name)`, does what it must between phases (read node
CPU or RSS, kill a node, merge id maps) and lets them all go on with `Workers.release(value)`,
which each worker receives from `await phase.wait()`. A worker that fails sends ("error", text)
instead, and the parent's `gather` raises. Workers are daemonic and killed if they do not stop.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import resource
from collections.abc import Callable, Coroutine
from typing import Any


def raise_fd_limit(need: int) -> int:
    """Raise RLIMIT_NOFILE towards `need` (children inherit it): the soft limit up to the hard
    one, and the hard one too where we may (CAP_SYS_RESOURCE). The soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return need
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            need = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


class Phase:
    """The worker's end of the pipe."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    async def report(self, name: str, payload: Any = None) -> None:
        self.pipe.send((name, payload))

    async def wait(self) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, self.pipe.recv)

    async def step(self, name: str, payload: Any = None) -> Any:
        """report, then wait for the parent's release."""
        await self.report(name, payload)
        return await self.wait()


WorkerMain = Callable[[Any, Phase], Coroutine[Any, Any, None]]


def worker_entry(main: WorkerMain, spec: Any, pipe: Any, fd_limit: int) -> None:
    """multiprocessing target (spawned): run `main(spec, phase)` under uvloop."""
    try:
        raise_fd_limit(fd_limit)
        try:
            import uvloop

            runner_args: dict[str, Any] = {"loop_factory": uvloop.new_event_loop}
        except ImportError:  # pragma: no cover
            runner_args = {}
        with asyncio.Runner(**runner_args) as runner:
            runner.run(main(spec, Phase(pipe)))
    except BaseException as e:  # report, don't leave the parent waiting
        try:
            pipe.send(("error", repr(e)[:500]))
        except (OSError, ValueError):
            pass


class Workers:
    """K spawned worker processes, one per spec."""

    def __init__(self, main: WorkerMain, specs: list[Any], fd_limit: int = 4096) -> None:
        ctx = mp.get_context("spawn")
        self.pipes: list[Any] = []
        self.procs: list[Any] = []
        for spec in specs:
            parent, child = ctx.Pipe()
            p = ctx.Process(target=worker_entry, args=(main, spec, child, fd_limit), daemon=True)
            p.start()
            self.pipes.append(parent)
            self.procs.append(p)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(wait=15.0 if exc_type is None else 2.0)  # failed or interrupted: don't linger

    def gather(self, name: str, timeout: float) -> list[Any]:
        """Every worker's payload for phase `name` (in worker order)."""
        out = []
        for pc in self.pipes:
            if not pc.poll(timeout):
                raise RuntimeError(f"a worker sent no '{name}' within {timeout:.0f}s")
            kind, payload = pc.recv()
            if kind != name:
                raise RuntimeError(f"worker failed: {payload}")
            out.append(payload)
        return out

    def release(self, value: Any = None) -> None:
        for pc in self.pipes:
            pc.send(value)

    def close(self, wait: float = 15.0) -> None:
        """Tell every worker to finish; kill those still running after `wait` s."""
        for pc in self.pipes:
            try:
                pc.send("close")
            except (OSError, ValueError):
                pass
        for p in self.procs:
            p.join(wait)
            if p.is_alive():
                p.kill()
                p.join(5)
