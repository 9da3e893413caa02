"""One message's path across two nodes is one trace: the sender's frame, the chat actor, storage,
Redis, the other node, the recipient's socket and the recipient's ack."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
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


def _in_trace(spans: Any, root: Any, name: str) -> bool:
    return any(s.name == name and s.context.trace_id == root.context.trace_id for s in spans)
