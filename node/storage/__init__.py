"""All SQL of the node lives in this package; everything else calls these stores."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from node.storage.activations import Activation, ChatActivations
from node.storage.batched_reads import BatchedReads
from node.storage.chats import ChatStore, UnknownUser
from node.storage.cursors import CursorStore
from node.storage.errors import (
    CONNECTION_ERRORS,
    DATABASE_ERRORS,
    ChatMissing,
    Fenced,
    StoreUnavailable,
)
from node.storage.messages import ChatBatch, MessageStore, NewMessage
from node.storage.migrate import apply_migrations
from node.storage.pool import create_pool
from node.storage.tokens import RefreshTokenStore
from node.storage.users import UsernameTaken, UserStore

__all__ = [
    "CONNECTION_ERRORS",
    "DATABASE_ERRORS",
    "Activation",
    "BatchedReads",
    "ChatActivations",
    "ChatBatch",
    "ChatMissing",
    "ChatStore",
    "CursorStore",
    "Fenced",
    "MessageStore",
    "NewMessage",
    "RefreshTokenStore",
    "Storage",
    "StoreUnavailable",
    "UnknownUser",
    "UserStore",
    "UsernameTaken",
    "apply_migrations",
    "create_pool",
]


@dataclass(slots=True, frozen=True)
class Storage:
    """The stores over one pool."""

    pool: asyncpg.Pool
    users: UserStore
    tokens: RefreshTokenStore
    chats: ChatStore
    messages: MessageStore
    cursors: CursorStore
    reads: BatchedReads  # a connecting device's reads, batched across devices
    activations: ChatActivations  # chat actors' epoch bumps and member reads, batched

    @classmethod
    def over(cls, pool: asyncpg.Pool) -> Storage:
        return cls(
            pool=pool,
            users=UserStore(pool),
            tokens=RefreshTokenStore(pool),
            chats=ChatStore(pool),
            messages=MessageStore(pool),
            cursors=CursorStore(pool),
            reads=BatchedReads(pool),
            activations=ChatActivations(pool),
        )

    async def aclose(self) -> None:
        """Stop the batched reads and activations (before the pool closes)."""
        await self.reads.aclose()
        await self.activations.aclose()

    async def ping(self) -> None:
        await self.pool.fetchval("SELECT 1")
