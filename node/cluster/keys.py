"""Redis key and channel names, in one place. Everything lives under one prefix."""

from __future__ import annotations

PREFIX = "msgr:"


def alive(incarnation: str) -> str:
    return f"{PREFIX}alive:{incarnation}"


def lease(kind: str, ident: object) -> str:
    return f"{PREFIX}lease:{kind}:{ident}"


def presence(user_id: int) -> str:
    return f"{PREFIX}presence:{user_id}"


def mailbox(user_id: int) -> str:
    return f"{PREFIX}mbox:{user_id}"


def inbox(incarnation: str) -> str:
    return f"{PREFIX}inbox:{incarnation}"


# Web Push (see node.push). The fan-out script composes the per-user ones from PREFIX too.
PUSH_FLAGS_MARKER = f"{PREFIX}pushflags"  # present while every user's flag below is in Redis


def push_subscribed(user_id: int) -> str:
    """Set while the user has a push subscription."""
    return f"{PREFIX}pushsub:{user_id}"


def push_gate(user_id: int) -> str:
    """Held (by a node's incarnation) for a coalescing window after a push to the user."""
    return f"{PREFIX}pushgate:{user_id}"


def push_late(user_id: int) -> str:
    """The newest message the user was owed a push for while the gate was held."""
    return f"{PREFIX}pushlate:{user_id}"
