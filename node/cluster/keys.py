"""Redis key and channel names, in one place. Everything lives under one prefix.

Keys that a script or a pipeline touches together carry the same hash tag (the part in braces),
so on a Redis Cluster they share a hash slot: `{u:<id>}` for a user's presence and mailbox,
`{chat:<id>}` for a chat's lease, `{n:<incarnation>}` for a node's inbox. On one Redis the braces
mean nothing. The membership registry is one key (every node heartbeats into it).
"""

from __future__ import annotations

PREFIX = "msgr:"

MEMBERS = f"{PREFIX}members"

INBOX_PREFIX = f"{PREFIX}inbox:{{n:"
INBOX_SUFFIX = "}"


def lease(kind: str, ident: object) -> str:
    return f"{PREFIX}lease:{{{kind}:{ident}}}"


def presence(user_id: int) -> str:
    return f"{PREFIX}presence:{{u:{user_id}}}"


def mailbox(user_id: int) -> str:
    return f"{PREFIX}mbox:{{u:{user_id}}}"


def inbox(incarnation: str) -> str:
    return f"{INBOX_PREFIX}{incarnation}{INBOX_SUFFIX}"
