"""One message's path across two nodes is one trace: the sender's frame, the chat actor, storage,
Redis, the other node, the recipient's socket and the recipient's ack."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from node.tracing import setup_tracing, teardown_tracing
from tests.conftest import make_settings


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    setup_tracing(make_settings(tmp_path), exporter=exporter)
    yield exporter
    teardown_tracing()
    exporter.clear()


async def test_one_message_is_one_trace_across_two_nodes(
    spans: InMemorySpanExporter,
    node_api: Callable[..., Any],
) -> None:
    _a, api_a = await node_api(node_id="node-a")
    _b, api_b = await node_api(node_id="node-b")
    alice, bob = await api_a.account("alice"), await api_a.account("bob")
    chat = await api_a.direct(alice, bob)
    sender = await api_a.ws(alice)
    receiver = await api_b.ws(bob)

    spans.clear()
    await sender.send_message(chat, "traced", cmid="traced")
    await sender.next("sent")
    message = (await receiver.messages(1, chat))[0]
    await receiver.ack(chat, message["seq"])
    await receiver.send({"type": "ping"})
    await receiver.next("pong")  # frames are handled in order: the ack is done

    finished = spans.get_finished_spans()
    root = next(
        s
        for s in finished
        if s.name == "ws.frame" and s.parent is None and _in_trace(finished, s, "chat.commit")
    )
    trace_id = root.context.trace_id
    path = [s for s in finished if s.context.trace_id == trace_id]
    names = {s.name for s in path}
    assert {"ws.frame", "chat.commit", "node.deliver", "ws.deliver", "ws.ack"} <= names, names
    assert any(s.attributes.get("db.system") == "postgresql" for s in path), "no storage span"
    assert any(s.attributes.get("db.system") == "redis" for s in path), "no Redis span"
    commit = next(s for s in path if s.name == "chat.commit")
    crossed = next(s for s in path if s.name == "node.deliver")
    assert str(commit.attributes["node"]).startswith("node-a#")
    assert str(crossed.attributes["node"]).startswith("node-b#")  # the other node, same trace
    delivered = [s for s in path if s.name == "ws.deliver"]
    assert {s.attributes["node"] for s in delivered} == {"node-a", "node-b"}  # both sockets
    ack = next(s for s in path if s.name == "ws.ack")
    assert ack.parent is not None and ack.parent.span_id in {s.context.span_id for s in delivered}


class OnEnd(SpanProcessor):
    """Sets `event` when a span matching `wanted` ends (spans of the node end on its loop)."""

    def __init__(self, wanted: Callable[[ReadableSpan], bool], event: asyncio.Event) -> None:
        self._wanted = wanted
        self._event = event

    def on_end(self, span: ReadableSpan) -> None:
        if self._wanted(span):
            self._event.set()


def _in_trace(spans: Any, root: Any, name: str) -> bool:
    return any(s.name == name and s.context.trace_id == root.context.trace_id for s in spans)


async def test_no_span_carries_an_access_token(
    spans: InMemorySpanExporter, node_api: Callable[..., Any]
) -> None:
    """The WebSocket takes `?token=` (and a REST route refuses it): the URL a span records has
    the token redacted."""
    _node, api = await node_api()
    me = await api.account()
    upgrade_ended = asyncio.Event()
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(
        OnEnd(lambda span: "/api/v1/ws" in str(span.attributes), upgrade_ended)
    )
    spans.clear()
    ws = await api.http.ws_connect(f"{api.base}/api/v1/ws?device_id=d1&token={me.token}")
    await ws.receive_json(timeout=10)
    await ws.close()
    assert (await api.call("GET", "/api/v1/users/me", params={"token": me.token})).status == 401
    async with asyncio.timeout(10):  # the upgrade's span ends when its handler does, soon after
        await upgrade_ended.wait()
    finished = spans.get_finished_spans()
    for span in finished:
        for value in (span.attributes or {}).values():
            assert me.token[:12] not in str(value), (span.name, value)
