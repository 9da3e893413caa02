"""Embedded PostgreSQL, from the binaries bundled in the pgserver wheel."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

from ._process import (
    HOST,
    EmbeddedError,
    ServerProcess,
    child_env,
    log,
    log_size,
    package_dir,
    read_log,
)

SYSTEM_USER = "pgserver"  # the unprivileged user pgserver itself runs PostgreSQL as under root


def system_user(name: str = SYSTEM_USER) -> pwd.struct_passwd:
    """The system user ``name``, created if missing (needs root)."""
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    done = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:  # another node may have created it meanwhile
        return pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedError(f"cannot create system user {name!r}: {done.stderr.strip()}") from None


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(stat.S_IMODE(mode) | bits)


def _hand_over(user: pwd.struct_passwd, owned: Path, install: Path) -> None:
    """Let ``user`` own everything under ``owned`` and read/run everything under ``install``;
    their parent directories become traversable (o+x) but not listable."""
    for directory in {*owned.parents, *install.parents}:
        _add_mode(directory, stat.S_IXOTH)
    for dirpath, _, filenames in os.walk(install):
        _add_mode(Path(dirpath), stat.S_IROTH | stat.S_IXOTH)
        for filename in filenames:
            file = Path(dirpath, filename)
            run = stat.S_IXOTH if file.stat().st_mode & stat.S_IXUSR else 0
            _add_mode(file, stat.S_IROTH | run)
    for dirpath, dirnames, filenames in os.walk(owned):
        for entry in [dirpath, *(os.path.join(dirpath, name) for name in dirnames + filenames)]:
            if os.lstat(entry).st_uid != user.pw_uid:
                os.lchown(entry, user.pw_uid, user.pw_gid)


class EmbeddedPostgres(ServerProcess):
    """PostgreSQL with PGDATA in ``<root>/data`` and its log in ``<root>/postgres.log``: on
    127.0.0.1 only (no unix socket), trust auth, superuser ``postgres``, database ``messenger``,
    fsync on. A free port is picked at each start unless ``port`` is given; ``stop`` is a fast
    shutdown (SIGINT). As root, initdb and postgres run as the system user ``pgserver``.

    Before each start, postgres processes left on this PGDATA are stopped and any
    ``postmaster.pid`` then left is stale and removed; PostgreSQL does its own crash recovery.
    """

    kind = "postgres"
    process_name = "postgres"
    stop_signal = signal.SIGINT

    def __init__(self, root: Path, *, port: int | None = None, start_timeout: float = 60.0) -> None:
        super().__init__(root, port=port, start_timeout=start_timeout)
        self.pgdata = self.root / "data"
        self._bin = package_dir("pgserver") / "pginstall" / "bin"

    @property
    def workdir(self) -> Path:
        return self.pgdata

    def _url(self, port: int) -> str:
        return f"postgresql://postgres@{HOST}:{port}/messenger"

    def _prepare(self) -> None:
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = system_user()
            _hand_over(user, owned=self.root, install=self._bin.parent)
            self._popen_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        with contextlib.suppress(FileNotFoundError):  # no postgres of ours runs any more
            (self.pgdata / "postmaster.pid").unlink()
            log.warning("embedded.postgres.stale_pid_file", extra={"pgdata": str(self.pgdata)})

    def _initdb(self) -> None:
        """initdb into a scratch directory, renamed at the end: a crash leaves no half PGDATA."""
        scratch = self.root / "data.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        offset = log_size(self.log_path)
        began = time.monotonic()
        with self.log_path.open("ab") as log_file:
            done = subprocess.run(
                [
                    str(self._bin / "initdb"),
                    "-D",
                    str(scratch),
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "-U",
                    "postgres",
                    "--locale=C",
                    "--no-instructions",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=child_env(),
                timeout=self._start_timeout,
                check=False,
                **self._popen_user,
            )
        if done.returncode != 0:
            raise EmbeddedError(
                f"initdb failed with code {done.returncode}; {self.log_path} "
                f"says:\n{read_log(self.log_path, offset)}"
            )
        scratch.rename(self.pgdata)
        log.info(
            "embedded.postgres.initdb",
            extra={"pgdata": str(self.pgdata), "seconds": round(time.monotonic() - began, 2)},
        )

    def _command(self, port: int) -> list[str]:
        return [
            str(self._bin / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(port),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=300",
        ]

    def _is_ready(self, port: int) -> bool:
        done = subprocess.run(
            [str(self._bin / "pg_isready"), "-q", *_connection(port), "-t", "1"],
            env=child_env(),
            check=False,
        )
        return done.returncode == 0

    def _after_ready(self, port: int) -> None:
        if self._psql(port, "SELECT 1 FROM pg_database WHERE datname = 'messenger'") != "1":
            self._psql(port, "CREATE DATABASE messenger")

    def _psql(self, port: int, sql: str) -> str:
        done = subprocess.run(
            [
                str(self._bin / "psql"),
                "-X",
                "-tA",
                "-v",
                "ON_ERROR_STOP=1",
                *_connection(port),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=self._start_timeout,
            check=False,
        )
        if done.returncode != 0:
            raise EmbeddedError(f"embedded postgres: {sql!r} failed: {done.stderr.strip()}")
        return done.stdout.strip()


def _connection(port: int) -> list[str]:
    """Client arguments for the embedded server's maintenance database."""
    return ["-h", HOST, "-p", str(port), "-U", "postgres", "-d", "postgres"]
