"""The two pure, I/O-free guards of a node: the closed, versioned set of node-to-node envelopes,
and the per-user token bucket that admits sends."""

from __future__ import annotations

import time

import orjson
import pytest
from pydantic import ValidationError

from node.cluster import envelopes
from node.cluster.envelopes import (
    WIRE_VERSION,
    ChatSignal,
    Deliver,
    DeviceTaken,
    MessageEntry,
    PresenceBatch,
    SendReply,
    SendRequest,
    UserFrame,
    decode,
    encode,
)
from node.services.ratelimit import RateLimiter

TRACE = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}

EXAMPLES = [
    SendRequest(
        origin="n1#a",
        trace=TRACE,
        request_id="r1",
        chat_id=7,
        sender_id=3,
        client_msg_id="c1",
        text="héllo",
        attachments=[{"media_id": "m1"}],
    ),
    SendReply(origin="n2#b", request_id="r1", status="created", message='{"id":"1"}'),
    SendReply(origin="n2#b", request_id="r2", status="not_member"),
    Deliver(
        origin="n2#b",
        chat_id=7,
        user_ids=[3, 4],
        messages=[MessageEntry(seq=1, frame='{"type":"message"}'), MessageEntry(seq=2, frame="{}")],
        committed_at=1_800_000_000.25,
    ),
    UserFrame(origin="n1#a", user_ids=[3], frame='{"type":"typing"}', skip_user=3, skip_device="d"),
    UserFrame(origin="n1#a", user_ids=[], frame="{}"),
    ChatSignal(origin="n1#a", chat_id=7, user_id=3, device_id="d1", signal="read", seq=5),
    ChatSignal(origin="n1#a", chat_id=7, user_id=3, device_id="d1", signal="typing"),
    DeviceTaken(origin="n3#c", user_id=3, device_id="d1", epoch=9),
    PresenceBatch(origin="n1#a", changes=[(3, True), (4, False)], watchers=[(5, [0, 1]), (6, [1])]),
]


@pytest.mark.parametrize("envelope", EXAMPLES, ids=lambda e: f"{e.kind}")
def test_every_kind_round_trips(envelope: envelopes._Envelope) -> None:
    data = encode(envelope)
    assert isinstance(data, bytes)
    assert orjson.loads(data)["v"] == WIRE_VERSION == 1
    back = decode(data)
    assert type(back) is type(envelope)
    assert back == envelope
    assert decode(data.decode()) == envelope  # text frames too


def test_the_set_of_kinds_is_closed_and_covered() -> None:
    kinds = {e.kind for e in EXAMPLES}
    assert kinds == {
        "send",
        "send_reply",
        "deliver",
        "frame",
        "presence",
        "chat_signal",
        "device_taken",
    }


def wire(**changes: object) -> bytes:
    body = orjson.loads(encode(EXAMPLES[0]))
    body.update(changes)
    return orjson.dumps(body)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(wire(kind="shout"), id="unknown kind"),
        pytest.param(wire(v=2), id="version 2"),
        pytest.param(wire(v=0), id="version 0"),
        pytest.param(wire(extra="field"), id="extra field"),
        pytest.param(wire(chat_id="seven"), id="wrong type"),
        pytest.param(orjson.dumps({"v": 1, "origin": "n", "request_id": "r"}), id="no kind"),
        pytest.param(
            orjson.dumps({"v": 1, "kind": "device_taken", "origin": "n", "user_id": 1}),
            id="missing field",
        ),
        pytest.param(
            orjson.dumps(
                {
                    "v": 1,
                    "kind": "deliver",
                    "origin": "n",
                    "chat_id": 1,
                    "user_ids": [1],
                    "messages": [{"seq": 1, "frame": "{}", "extra": 1}],
                }
            ),
            id="extra field in a nested entry",
        ),
        pytest.param(
            orjson.dumps(
                {
                    "v": 1,
                    "kind": "chat_signal",
                    "origin": "n",
                    "chat_id": 1,
                    "user_id": 1,
                    "device_id": "d",
                    "signal": "shout",
                }
            ),
            id="unknown signal",
        ),
        pytest.param(b"not json", id="not json"),
    ],
)
def test_anything_outside_the_set_is_refused(data: bytes) -> None:
    with pytest.raises(ValidationError):
        decode(data)


def test_envelopes_are_immutable() -> None:
    with pytest.raises(ValidationError):
        EXAMPLES[-1].epoch = 10  # type: ignore[misc]


def test_a_version_other_than_1_cannot_even_be_built() -> None:
    with pytest.raises(ValidationError):
        DeviceTaken(v=2, origin="n", user_id=1, device_id="d", epoch=1)  # type: ignore[arg-type]


# --- the rate limiter (real clock) -----------------------------------------------------------


def test_a_burst_then_refusal_per_user() -> None:
    limiter = RateLimiter(burst=5, rate=0.001)  # no meaningful refill during the test
    assert [limiter.allow(1) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow(2)  # buckets are per user
    assert not limiter.allow(1, cost=0.5)


def test_the_bucket_refills_over_time() -> None:
    rate = 1000.0  # one token a millisecond
    limiter = RateLimiter(burst=3, rate=rate)
    start = time.monotonic()
    while limiter.allow(1):  # drain it (refill during the loop is at most a token or two)
        assert time.monotonic() - start < 1
    assert not limiter.allow(1)
    time.sleep(4 / rate)  # the clock under test: a full bucket's worth and then some
    allowed = 0
    while limiter.allow(1) and allowed < 100:
        allowed += 1
    assert allowed >= 3  # refilled; capped at the burst (next test), not at 100


def test_a_refilled_bucket_never_exceeds_the_burst() -> None:
    limiter = RateLimiter(burst=2, rate=1e9)  # refills completely between any two calls
    assert not limiter.allow(1, cost=3.0)  # more than a full bucket can ever hold
    assert limiter.allow(1, cost=2.0)
    slow = RateLimiter(burst=2, rate=1000.0)
    slow.allow(1)
    time.sleep(0.01)  # ten tokens' worth of time, but the bucket holds two
    assert [slow.allow(1) for _ in range(3)] == [True, True, False]
