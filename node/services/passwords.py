"""Password hashing with bcrypt, off the event loop.

bcrypt costs tens to hundreds of milliseconds by design, so every hash and check runs in a worker
thread: a login never stalls the other connections of the node. Given a `Ticket` of the node's
hashing gate (`node.services.hashing`), on one of the gate's workers at that attempt's turn;
without one (tools, tests), in the default executor.

bcrypt only reads the first 72 bytes of its input (bcrypt 5 refuses longer ones outright), while
the contract allows passwords of 128 characters, up to 512 bytes of UTF-8. So the password is
pre-hashed: bcrypt sees base64(SHA-256(utf-8 password)), 44 ASCII bytes with no NUL, which keeps
every character of the password significant. (Plain SHA-256 digests could contain NUL bytes, which
some bcrypt implementations treat as the end of the input; base64 avoids that.)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable
from typing import TypeVar

import bcrypt

from node.services.hashing import Ticket

T = TypeVar("T")

log = logging.getLogger(__name__)


def _prehash(password: str) -> bytes:
    return base64.b64encode(hashlib.sha256(password.encode("utf-8")).digest())


def _hash(password: str, rounds: int) -> str:
    return bcrypt.hashpw(_prehash(password), bcrypt.gensalt(rounds)).decode("ascii")


def _check(password: str, hashed: str) -> bool:
    try:
        return bcrypt.checkpw(_prehash(password), hashed.encode("ascii"))
    except ValueError:  # not a bcrypt hash: treat as a mismatch, but say so
        log.error("password.bad_hash")
        return False


class PasswordHasher:
    """Hashes and checks passwords at a fixed bcrypt cost.

    `check_absent` spends the same time as a real check, against a dummy hash of the same cost,
    so that a login for an unknown username takes as long as one with a wrong password.
    """

    def __init__(self, rounds: int) -> None:
        self._rounds = rounds
        self._dummy: str | None = None

    async def hash(self, password: str, ticket: Ticket | None = None) -> str:
        """A new salted hash (the text stored in `users.password_hash`)."""
        return await _run(ticket, _hash, password, self._rounds)

    async def check(self, password: str, hashed: str, ticket: Ticket | None = None) -> bool:
        """True when `password` is the one `hashed` was made from."""
        return await _run(ticket, _check, password, hashed)

    async def check_absent(self, password: str, ticket: Ticket | None = None) -> None:
        """One check's worth of work for a user who does not exist; always fails."""
        if self._dummy is None:  # made once (off the gate: it is the node's, not a client's)
            self._dummy = await self.hash("dummy password for timing")
        await self.check(password, self._dummy, ticket)


async def _run(ticket: Ticket | None, fn: Callable[..., T], *args: object) -> T:
    if ticket is None:
        return await asyncio.to_thread(fn, *args)
    return await ticket.run(fn, *args)
