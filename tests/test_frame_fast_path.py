"""The fast path for the client frames sent most (`send`, `ack`, `read`, `typing`) agrees with
the models.

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
    PlainSend,
    ReadFrame,
    SendFrame,
    TypingFrame,
    parse_common,
)
from node.ids import MAX_ID

BIG = 2**63 - 1


def model_view(data: str) -> tuple[str, int, int] | PlainSend | None:
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
    if isinstance(frame, SendFrame):
        return PlainSend(frame.chat_id, frame.client_msg_id, frame.text, frame.attachments)
    return None


def agrees(data: str) -> tuple[str, int, int] | PlainSend | None:
    fast = parse_common(data)
    if fast is not None:
        assert model_view(data) == fast, data
    return fast


def test_key_sets_are_the_models_fields() -> None:
    assert set(AckFrame.model_fields) == {"type", "chat_id", "seq"}
    assert set(ReadFrame.model_fields) == {"type", "chat_id", "seq"}
    assert set(TypingFrame.model_fields) == {"type", "chat_id"}
    assert set(SendFrame.model_fields) == {
        "type",
        "chat_id",
        "client_msg_id",
        "text",
        "attachments",
    }


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
        (
            '{"type":"send","chat_id":"3","client_msg_id":"c1","text":"hi"}',
            PlainSend(3, "c1", "hi", []),
        ),
        (
            '{"type":"send","chat_id":3,"client_msg_id":"c","text":"","attachments":["a","b"]}',
            PlainSend(3, "c", "", ["a", "b"]),
        ),
        (
            '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":[]}',
            PlainSend(3, "c", "x", []),
        ),
        (
            '{"type":"send","chat_id":"3","client_msg_id":"'
            + "c" * 64
            + '","text":"'
            + "é" * 4000
            + '"}',
            PlainSend(3, "c" * 64, "é" * 4000, []),
        ),
        (
            '{"type":"send","chat_id":"3","client_msg_id":"☃","text":"☃"}',
            PlainSend(3, "☃", "☃", []),
        ),
    ],
)
def test_plain_common_frames_take_the_fast_path(
    data: str, expected: tuple[str, int, int] | PlainSend
) -> None:
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
        '[{"type":"ack","chat_id":"1","seq":1}]',
        '{"type":"ack","chat_id":"1","seq":1}x',
        '{"type":"ack","chat_id":"1","seq":NaN}',
        '"ack"',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":""}',  # no text, no attachment
        '{"type":"send","chat_id":"3","client_msg_id":"","text":"x"}',
        '{"type":"send","chat_id":"3","client_msg_id":"' + "c" * 65 + '","text":"x"}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"' + "x" * 4001 + '"}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"a\\u0000b"}',
        '{"type":"send","chat_id":"3","client_msg_id":"c\\u0000","text":"x"}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"\\ud800"}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":5}',
        '{"type":"send","chat_id":"3","client_msg_id":7,"text":"x"}',
        '{"type":"send","chat_id":"0","client_msg_id":"c","text":"x"}',
        '{"type":"send","chat_id":"3","text":"x"}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","x":1}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":null}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":"a"}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":[""]}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":[1]}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":["a\\u0000"]}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":["'
        + "a" * 65
        + '"]}',
        '{"type":"send","chat_id":"3","client_msg_id":"c","text":"x","attachments":'
        + orjson.dumps(["a"] * 11).decode()
        + "}",
        "",
        "\ud800",
    ],
)
def test_everything_else_is_left_to_the_models(data: str) -> None:
    assert parse_common(data) is None


_IDS = st.one_of(
    st.integers(min_value=1, max_value=MAX_ID).map(str), st.integers(min_value=1, max_value=MAX_ID)
)
_VALUES = st.one_of(
    st.integers(min_value=-3, max_value=3),
    st.integers(min_value=MAX_ID - 2, max_value=MAX_ID + 2),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1", "01", "0", "", " 7", "7 ", "\u0661", "9" * 19, "9" * 20, "1.5", "-1"]),
    st.text(max_size=5),
    st.lists(st.integers(-9, 9), max_size=2),
)
_KINDS = st.sampled_from(["ack", "read", "typing", "ping", "send", "Ack"])
_CHAT_IDS = st.one_of(_IDS, _IDS, _VALUES)
_SEQS = st.one_of(st.integers(0, 2**63 - 1), _VALUES)
_FRAMES = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["ack", "read"]), "chat_id": _CHAT_IDS, "seq": _SEQS}
    ),
    st.fixed_dictionaries({"type": st.just("typing"), "chat_id": _CHAT_IDS}),
    st.fixed_dictionaries(
        {"type": st.one_of(_KINDS, _VALUES), "chat_id": _CHAT_IDS},
        optional={"seq": _SEQS, "x": _VALUES},
    ),
)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(_FRAMES)
def test_generated_frames_agree_with_the_models(frame: dict[str, Any]) -> None:
    agrees(orjson.dumps(frame).decode())


_TEXTS = st.one_of(
    st.text(min_size=1, max_size=8),
    st.text(max_size=8),
    st.sampled_from(["", "\x00", "a\x00", "c" * 64, "c" * 65, "t" * 4000, "t" * 4001]),
)
_SENDS = st.fixed_dictionaries(
    {
        "type": st.just("send"),
        "chat_id": st.one_of(_IDS, st.sampled_from(["0", 1.0, None])),
        "client_msg_id": st.one_of(_TEXTS, _TEXTS, st.integers(-9, 9)),
        "text": st.one_of(_TEXTS, _TEXTS, st.integers(-9, 9), st.none()),
    },
    optional={
        "attachments": st.one_of(
            st.lists(_TEXTS, max_size=12), st.lists(st.integers(-9, 9)), st.none(), _TEXTS
        ),
    },
)


@settings(max_examples=1000, deadline=None, derandomize=True)
@given(_SENDS)
def test_generated_send_frames_agree_with_the_models(frame: dict[str, Any]) -> None:
    agrees(orjson.dumps(frame).decode())


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.text(max_size=60))
def test_arbitrary_text_agrees_with_the_models(data: str) -> None:
    agrees(data)
