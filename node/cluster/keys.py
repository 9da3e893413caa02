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
