"""Redis key and channel names, in one place. Everything lives under one prefix.

Keys that a script or a pipeline touches together carry the same hash tag (the part in braces),
so on a Redis Cluster they share a hash slot: `{u:<id>}` for a user's presence, mailbox and push
keys, `{chat:<id>}` for a chat's lease, `{n:<incarnation>}` for a node's inbox. On one Redis the
braces mean nothing. The membership registry is one key (every node heartbeats into it).
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


# Web Push (see node.push): per user, in the user's hash slot.
PUSH_FLAGS_MARKER = f"{PREFIX}pushflags"  # present while every user's flag below is in Redis


def push_subscribed(user_id: int) -> str:
    """Set while the user has a push subscription."""
    return f"{PREFIX}pushsub:{{u:{user_id}}}"


def push_gate(user_id: int) -> str:
    """Held (by a node's incarnation) for a coalescing window after a push to the user."""
    return f"{PREFIX}pushgate:{{u:{user_id}}}"


def push_late(user_id: int) -> str:
    """The newest message the user was owed a push for while the gate was held."""
    return f"{PREFIX}pushlate:{{u:{user_id}}}"
