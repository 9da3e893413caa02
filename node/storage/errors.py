"""How storage fails, in the node's own terms (callers need not know asyncpg's exceptions)."""

from __future__ import annotations

import asyncpg

# PostgreSQL down, restarting, unreachable or too slow: worth retrying later.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
)
# Anything the database or the driver may raise.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.PostgresError,
)


class StoreUnavailable(Exception):
    """PostgreSQL could not store a batch: down, or no answer within the commit timeout."""


class ChatMissing(Exception):
    """The chat of a batch does not exist (any more)."""


class Fenced(Exception):
    """The writer's epoch is no longer the chat's: another node owns the chat now."""


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL refused the data itself (class 22: e.g. a NUL character in text, a number out
    of range; or a CHECK constraint): retrying the same data can never succeed."""
    if isinstance(exc, asyncpg.DataError | asyncpg.CheckViolationError):
        return True
    return isinstance(exc, asyncpg.PostgresError) and str(exc.sqlstate or "").startswith("22")
