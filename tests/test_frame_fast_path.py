"""The fast path for the client frames sent most (`ack`, `read`, `typing`) agrees with the models.

`parse_common` may only take frames `CLIENT_FRAME` accepts, with the same values, and leaves
everything else to the models (so refusals carry the models' errors). These tests check that on
hand-picked edge cases and on generated frames, and that the plain forms clients send really take
the fast path (it would be dead code otherwise).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from node.http.ws.schemas import (
    CLIENT_FRAME,
    AckFrame,
    ReadFrame,
    TypingFrame,
    parse_common,
)
from node.ids import MAX_ID

BIG = 2**63 - 1


def model_view(data: str) -> tuple[str, int, int] | None:
    """What the models make of a frame, in `parse_common`'s shape (None: refused or another
    type)."""
    try:
        frame = CLIENT_FRAME.validate_json(data)
    except ValidationError:
        return None
    if isinstance(frame, AckFrame | ReadFrame):
        return frame.type, frame.chat_id, frame.seq
    if isinstance(frame, TypingFrame):
        return frame.type, frame.chat_id, 0
    return None


def agrees(data: str) -> tuple[str, int, int] | None:
    fast = parse_common(data)
    if fast is not None:
        assert model_view(data) == fast, data
    return fast


def test_key_sets_are_the_models_fields() -> None:
    assert set(AckFrame.model_fields) == {"type", "chat_id", "seq"}
    assert set(ReadFrame.model_fields) == {"type", "chat_id", "seq"}
    assert set(TypingFrame.model_fields) == {"type", "chat_id"}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ('{"type":"ack","chat_id":"12","seq":3}', ("ack", 12, 3)),
        ('{"type": "ack", "chat_id": 12, "seq": 0}', ("ack", 12, 0)),
        ('{"seq":7,"chat_id":"9","type":"read"}', ("read", 9, 7)),
        ('{"type":"typing","chat_id":"5"}', ("typing", 5, 0)),
        ('{"type":"typing","chat_id":5}', ("typing", 5, 0)),
        (f'{{"type":"ack","chat_id":"{MAX_ID}","seq":{BIG}}}', ("ack", MAX_ID, BIG)),
        ('  {"type":"ack","chat_id":"0012","seq":1}\n', ("ack", 12, 1)),
        ('{"type":"ack","chat_id":"1","seq":1,"seq":5}', ("ack", 1, 5)),  # last key wins (both)
        ('{"type":"typing","type":"ack","chat_id":"1","seq":3}', ("ack", 1, 3)),
    ],
)
def test_plain_common_frames_take_the_fast_path(data: str, expected: tuple[str, int, int]) -> None:
    assert agrees(data) == expected
    assert model_view(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        '{"type":"ack","chat_id":"1","seq":true}',  # lax forms the models take: left to them
        '{"type":"ack","chat_id":"1","seq":2.0}',
        '{"type":"ack","chat_id":"1","seq":"3"}',
        '{"type":"ack","chat_id":"1","seq":-1}',  # refused
        f'{{"type":"ack","chat_id":"1","seq":{BIG + 1}}}',
        '{"type":"ack","chat_id":"1","seq":99999999999999999999999}',
        '{"type":"ack","chat_id":"0","seq":1}',
        '{"type":"ack","chat_id":0,"seq":1}',
        '{"type":"ack","chat_id":-4,"seq":1}',
        f'{{"type":"ack","chat_id":"{MAX_ID + 1}","seq":1}}',
        f'{{"type":"ack","chat_id":{MAX_ID + 1},"seq":1}}',
        '{"type":"ack","chat_id":"00000000000000000001","seq":1}',  # 20 digits
        '{"type":"ack","chat_id":"","seq":1}',
        '{"type":"ack","chat_id":" 1","seq":1}',
        '{"type":"ack","chat_id":"1e3","seq":1}',
        '{"type":"ack","chat_id":"\u0661","seq":1}',  # Arabic-Indic digit one
        '{"type":"ack","chat_id":"\u00b2","seq":1}',  # superscript two
        '{"type":"ack","chat_id":true,"seq":1}',
        '{"type":"ack","chat_id":1.0,"seq":1}',
        '{"type":"ack","chat_id":null,"seq":1}',
        '{"type":"ack","chat_id":["1"],"seq":1}',
        '{"type":"ack","chat_id":"1"}',
        '{"type":"ack","seq":1}',
        '{"type":"ack","chat_id":"1","seq":1,"x":1}',
        '{"type":"typing","chat_id":"1","seq":1}',
        '{"type":"read","chat_id":"1"}',
        '{"type":"ACK","chat_id":"1","seq":1}',
        '{"type":"ping"}',
        '{"type":"send","chat_id":"1","client_msg_id":"c","text":"hi"}',
        '[{"type":"ack","chat_id":"1","seq":1}]',
        '{"type":"ack","chat_id":"1","seq":1}x',
        '{"type":"ack","chat_id":"1","seq":NaN}',
        '"ack"',
        "",
        "\ud800",
    ],
)
def test_everything_else_is_left_to_the_models(data: str) -> None:
    assert parse_common(data) is None


_VALUES = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.integers(min_value=MAX_ID - 2, max_value=MAX_ID + 2),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1", "01", "0", "", " 7", "7 ", "\u0661", "9" * 19, "9" * 20, "1.5", "-1"]),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)
_FRAMES = st.dictionaries(
    st.sampled_from(["type", "chat_id", "seq", "x", "Type"]),
    st.one_of(st.sampled_from(["ack", "read", "typing", "ping", "send", "Ack"]), _VALUES),
    max_size=4,
)


@settings(max_examples=600, deadline=None, derandomize=True)
@given(_FRAMES)
def test_generated_frames_agree_with_the_models(frame: dict[str, Any]) -> None:
    try:
        data = orjson.dumps(frame).decode()
    except orjson.JSONEncodeError:  # an integer past 64 bits
        data = "{" + ",".join(f'"{k}":{v}' for k, v in frame.items() if isinstance(v, int)) + "}"
    agrees(data)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=60))
def test_arbitrary_text_agrees_with_the_models(data: str) -> None:
    agrees(data)
