"""Prometheus metrics of a node, served as text at `/metrics`.

Counters and histograms are module-level (one node per process in production; in-process test
nodes share them). Gauges that describe live state are read at scrape time from the runtime
(`bind_runtime`), so nothing has to keep them up to date on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MESSAGES_ACCEPTED = Counter(
    "messenger_messages_accepted_total", "Messages stored by this node's chat actors"
)
MESSAGES_DELIVERED = Counter(
    "messenger_messages_delivered_total", "Message frames written to devices' sockets", ["path"]
)
DELIVERY_LATENCY = Histogram(
    "messenger_delivery_latency_seconds",
    "From a batch's commit to its frames written to live devices' sockets",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
BACKLOG_SIZE = Histogram(
    "messenger_backlog_messages",
    "Messages sent to a device as its backlog when it connects",
    buckets=(0, 1, 10, 100, 1000, 10_000, 100_000),
)
MAILBOX_APPENDS = Counter(
    "messenger_dormant_mailbox_appends_total", "Batches appended to dormant users' Redis mailboxes"
)
BATCHED_READS = Counter(
    "messenger_batched_reads_total",
    "Connecting devices' reads (user check, epoch, positions, backlog) served by batched queries",
    ["read"],
)
BATCHED_READ_QUERIES = Counter(
    "messenger_batched_read_queries_total",
    "PostgreSQL statements that served them (one per batch; a failed batch split is retried)",
    ["read"],
)
REDIS_ERRORS = Counter("messenger_redis_errors_total", "Redis operations that failed", ["op"])
POSTGRES_ERRORS = Counter(
    "messenger_postgres_errors_total", "PostgreSQL operations that failed", ["op"]
)
OWNERSHIP_CHANGES = Counter(
    "messenger_ownership_changes_total", "Chat ownership taken or lost by this node", ["change"]
)
AUTH_THROTTLED = Counter(
    "messenger_auth_throttled_total",
    "Login and registration attempts refused before any password was hashed",
    ["scope"],
)
SLOW_CONSUMERS = Counter(
    "messenger_slow_consumer_disconnects_total", "Sockets closed because their outbox overflowed"
)
PUSHES = Counter("messenger_push_total", "Web Push requests by outcome", ["outcome"])

CONNECTIONS = Gauge("messenger_connections", "WebSocket connections open on this node")
ACTORS = Gauge("messenger_actors", "Live actors on this node", ["kind"])
MAILBOX_DEPTH = Gauge(
    "messenger_actor_mailbox_depth", "Messages waiting in actors' mailboxes", ["kind"]
)
OUTBOX_DEPTH = Gauge("messenger_outbox_depth", "Frames waiting in sockets' outboxes")
PENDING_ACKS = Gauge("messenger_pending_acks", "Acked cursors not yet written to PostgreSQL")


def bind_gauge(gauge: Gauge, read: Callable[[], float], **labels: str) -> None:
    (gauge.labels(**labels) if labels else gauge).set_function(read)


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def bind_runtime(runtime: Any) -> None:
    """Point the state gauges at a running node (see node.app.NodeRuntime)."""
    bind_gauge(CONNECTIONS, lambda: len(runtime.hub.sessions))
    bind_gauge(ACTORS, lambda: len(runtime.chats), kind="chat")
    bind_gauge(ACTORS, lambda: len(runtime.users), kind="user")
    bind_gauge(
        MAILBOX_DEPTH, lambda: sum(r.mailbox_depth for r in runtime.chats.refs()), kind="chat"
    )
    bind_gauge(
        MAILBOX_DEPTH, lambda: sum(r.mailbox_depth for r in runtime.users.refs()), kind="user"
    )
    bind_gauge(OUTBOX_DEPTH, lambda: sum(s.outbox_depth for s in runtime.hub.sessions))
    bind_gauge(PENDING_ACKS, lambda: runtime.cursors.pending)
