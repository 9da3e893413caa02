"""Ids and seqs as they cross the node's edges: parsed in one place, with one limit.

Ids are PostgreSQL bigints, written as decimal strings on the wire (JSON numbers are accepted in
bodies and frames too). Anything that is not an id in 1..MAX_ID is refused here, at the edge, so
nothing past int64 ever reaches asyncpg (which would fail with an overflow) or Redis keys.
"""

from __future__ import annotations

MAX_ID = 2**63 - 1  # ids are PostgreSQL bigints
MAX_SEQ = MAX_ID  # a chat's seq is a bigint too
ID_PATTERN = r"^[0-9]{1,19}$"


class NotAnId(ValueError):
    def __init__(self) -> None:
        super().__init__("must be an id (a string of digits)")


def parse_id(value: object) -> int:
    """An id from a decimal string or an integer in 1..MAX_ID; `NotAnId` otherwise."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit() and 0 < len(value) <= 19):
            raise NotAnId()
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID:
        return value
    raise NotAnId()


def id_or_none(value: object) -> int | None:
    """`parse_id`, or None where it would refuse (e.g. a path segment: simply not found)."""
    try:
        return parse_id(value)
    except NotAnId:
        return None
