"""`--profile DIR`: py-spy samples the node processes during the measured phase of a run.

`Profiler(pids, DIR, name)` starts one `py-spy record --format raw` per node process (sampling
100 times a second, without pausing the node: `--nonblocking`) and, on `stop()`, ends them with
SIGINT, which makes py-spy write its collapsed stacks (`frame;frame;… count` lines) to
DIR/<name>-<pid>.txt; `summary()` lists the frames with the most samples on top of the stack
(self) and anywhere in it (inclusive). Needs py-spy on PATH or in this venv (`pip install
py-spy`) and the right to trace the nodes (root, or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    def __init__(self, pids: list[int], out_dir: str, name: str) -> None:
        self.files: list[Path] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        exe = py_spy()
        if exe is None:
            raise SystemExit("--profile needs py-spy (pip install py-spy)")
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        for pid in pids:
            path = Path(out_dir) / f"{name}-{pid}.txt"
            cmd = [exe, "record", "--pid", str(pid), "--rate", "100", "--nonblocking"]
            cmd += ["--format", "raw", "--output", str(path)]
            self.files.append(path)
            self.procs.append(
                subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def stop(self) -> list[Path]:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        return [f for f in self.files if f.exists()]


def summary(path: Path, top: int = 25) -> str:
    """The frames with the most samples: self (top of stack) and inclusive."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"{path.name}: {total} samples"]
    for title, counter in (("self", own), ("inclusive", incl)):
        out.append(f"  top {title}:")
        for frame, n in counter.most_common(top):
            out.append(f"    {100 * n / max(1, total):5.1f}%  {frame}")
    return "\n".join(out)


def start(out_dir: str | None, pids: list[int], name: str) -> Profiler | None:
    """A Profiler when `--profile DIR` was given (and the run has node PIDs)."""
    return Profiler(pids, out_dir, name) if out_dir and pids else None


def finish(prof: Profiler | None) -> None:
    """Stop the profiler; each file's summary next to it (`.top.txt`), paths on stderr."""
    if prof is None:
        return
    for path in prof.stop():
        top = path.with_suffix(".top.txt")
        top.write_text(summary(path) + "\n")
        print(f"[bench] profile: {path} (summary {top})", file=sys.stderr, flush=True)
