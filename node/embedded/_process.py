"""The lifecycle shared by the embedded servers: a child process of the node, in a session of its
own, that never outlives the node (:mod:`node.childproc`)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Self

import psutil  # type: ignore[import-untyped,unused-ignore]

from node.childproc import spawn

log = logging.getLogger("node.embedded")

HOST = "127.0.0.1"
STOP_TIMEOUT = 15.0


class EmbeddedError(RuntimeError):
    """An embedded server could not be started; the message ends with the tail of its log."""


def package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(
            f"embedded mode needs the {package!r} package: pip install 'messenger-node[embedded]'"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def child_env() -> dict[str, str]:
    """The node's environment without libpq variables (PGHOST, PGPORT... would mislead)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def read_log(path: Path, offset: int, limit: int = 4000) -> str:
    """At most the last ``limit`` bytes written to ``path`` after ``offset``."""
    try:
        with path.open("rb") as f:
            end = f.seek(0, os.SEEK_END)
            f.seek(max(offset, end - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until the processes are gone, or zombies (an unreaped orphan is dead enough);
    return those still alive after ``timeout``."""

    def alive(proc: psutil.Process) -> bool:
        try:
            return bool(proc.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    while (left := [proc for proc in procs if alive(proc)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


class ServerProcess(ABC):
    """One server run as a direct child of the node, in a session of its own (a terminal's Ctrl-C
    reaches the node only) and sent ``stop_signal`` by the kernel if the node dies, with its
    output appended to ``<root>/<kind>.log``.

    ``start`` first stops leftovers of ours, found by process name and working directory
    (``workdir``), then waits until the server answers. The port, once picked, stays the
    server's until ``stop``: a server that died is started again on it by :meth:`revive`, so
    the node's clients keep their URL. ``stop`` sends ``stop_signal`` and SIGKILLs after
    STOP_TIMEOUT. ``start``, ``revive``, ``stop`` and ``kill`` may come from different threads:
    they take turns.
    """

    kind = ""  # "postgres" or "redis", in logs and messages
    process_name = ""
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path, *, port: int | None, start_timeout: float) -> None:
        self.root = root.resolve()
        self.log_path = self.root / f"{self.kind}.log"
        self._fixed_port = port
        self._start_timeout = start_timeout
        self._port: int | None = None  # kept after a crash, cleared by stop
        self._proc: subprocess.Popen[bytes] | None = None
        self._popen_user: dict[str, Any] = {}  # user=, group= when dropping root
        self._turn = threading.RLock()

    @property
    @abstractmethod
    def workdir(self) -> Path:
        """The server's current directory, which tells our processes from others."""

    @abstractmethod
    def _url(self, port: int) -> str: ...

    @abstractmethod
    def _command(self, port: int) -> list[str]: ...

    @abstractmethod
    def _is_ready(self, port: int) -> bool: ...

    def _prepare(self) -> None:  # noqa: B027 (an optional hook)
        """Runs before the server is spawned, after leftovers were stopped."""

    def _after_ready(self, port: int) -> None:  # noqa: B027 (an optional hook)
        """Runs once the server answers."""

    @property
    def url(self) -> str:
        """The server's URL from its first start until ``stop`` (while it restarts too)."""
        if self._port is None:
            raise EmbeddedError(f"embedded {self.kind} is not running")
        return self._url(self._port)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The current server process (it may have exited), None once stopped."""
        return self._proc

    def start(self) -> str:
        """Start the server (idempotent) and return its URL once it answers."""
        with self._turn:
            if self.pid is not None:
                return self.url
            return self._start()

    def revive(self) -> bool:
        """Start the server again on its port if it died; False if it runs or was stopped."""
        with self._turn:
            if self._port is None or self.pid is not None:
                return False
            self._start()
            return True

    def _start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        self._stop_leftovers()
        self._prepare()
        sticky = self._fixed_port or self._port
        attempts = 1 if sticky else 3  # a port we picked may be taken meanwhile
        for attempt in range(1, attempts + 1):
            port = sticky or _free_port()
            offset = log_size(self.log_path)
            with self.log_path.open("ab") as log_file:
                self._proc = spawn(
                    self._command(port),
                    death_signal=self.stop_signal,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                    env=child_env(),
                    **self._popen_user,
                )
            problem = self._wait_ready(port)
            if problem is None:
                self._port = port
                try:
                    self._after_ready(port)
                except BaseException:
                    self.stop()
                    raise
                log.info(
                    "embedded.started",
                    extra={"server": self.kind, "port": port, "pid": self._proc.pid},
                )
                return self.url
            self._end(self._proc)
            self._proc = None
            output = read_log(self.log_path, offset)
            if attempt == attempts or "in use" not in output:
                raise EmbeddedError(
                    f"embedded {self.kind} {problem}; {self.log_path} says:\n{output}"
                )
        raise AssertionError("unreachable")

    def _wait_ready(self, port: int) -> str | None:
        """None once the server answers, else what went wrong."""
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return f"exited with code {self._proc.returncode}"
            if self._is_ready(port):
                return None
            time.sleep(0.05)
        return f"did not answer within {self._start_timeout:g}s"

    def stop(self) -> None:
        """Graceful shutdown, SIGKILL after STOP_TIMEOUT; the port is given up. Idempotent."""
        with self._turn:
            proc, self._proc, self._port = self._proc, None, None
            if proc is not None:
                self._end(proc)
                log.info(
                    "embedded.stopped",
                    extra={"server": self.kind, "pid": proc.pid, "returncode": proc.returncode},
                )

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(self.stop_signal)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log.warning("embedded.stop_timeout", extra={"server": self.kind, "pid": proc.pid})
                proc.kill()
                proc.wait()

    def kill(self) -> None:
        """SIGKILL the server, as a crash would: it keeps its port, for :meth:`revive`."""
        with self._turn:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()

    def _stop_leftovers(self) -> None:
        """Stop processes of ours still running on this directory (their node died alone)."""
        found: list[psutil.Process] = []
        for proc in psutil.process_iter(["name"]):
            with contextlib.suppress(psutil.Error, OSError):
                if proc.info["name"] == self.process_name and Path(proc.cwd()) == self.workdir:
                    found.append(proc)
        if not found:
            return
        pids = {proc.pid for proc in found}
        log.warning("embedded.leftovers", extra={"server": self.kind, "pids": sorted(pids)})
        for proc in found:
            with contextlib.suppress(psutil.Error):
                if proc.ppid() not in pids:  # postgres workers follow their postmaster
                    proc.send_signal(self.stop_signal)
        alive = _wait_gone(found, STOP_TIMEOUT)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        _wait_gone(alive, 5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
