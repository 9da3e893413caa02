"""OpenTelemetry tracing: off unless an OTLP endpoint is configured (standard `OTEL_*` variables).

When on, the official instrumentations trace the aiohttp server, asyncpg and redis-py, and the
node adds spans for what they cannot see, so that one message's path is one trace:

    ws.frame send (sender's socket) -> chat.commit (chat actor; asyncpg and Redis spans inside)
      -> [envelope to another node, trace context inside] -> ws.deliver (each recipient's
      socket) -> ws.ack (the recipient's ack of it)

Trace context travels as a W3C carrier dict (`traceparent`): in `SendCommand.trace`, in every
node-to-node envelope, and with each delivered batch. When tracing is off, `enabled()` is false
and the hot path skips all of it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Link, SpanKind

from node.config import Settings

log = logging.getLogger(__name__)

_tracer = trace.get_tracer("messenger.node")
_state = {"enabled": False}
Carrier = dict[str, str]


def enabled() -> bool:
    return _state["enabled"]


def setup_tracing(
    settings: Settings, *, exporter: SpanExporter | None = None
) -> TracerProvider | None:
    """Install a tracer provider and the instrumentations, once per process. With no exporter
    given, an OTLP/HTTP exporter is used when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces one)
    is set; otherwise tracing stays off and this returns None."""
    if exporter is None:
        if settings.otel_sdk_disabled or not settings.otel_endpoint:
            return None
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processor: Any = BatchSpanProcessor(OTLPSpanExporter())  # reads OTEL_EXPORTER_OTLP_*
    else:
        processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.otel_service_name, "service.instance.id": settings.node_id}
        )
    )
    provider.add_span_processor(processor)
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):  # set once per process: reuse it (tests)
        current.add_span_processor(processor)
        provider = current
    else:
        trace.set_tracer_provider(provider)
    _instrument(provider)
    _state["enabled"] = True
    log.info("tracing.enabled", extra={"endpoint": settings.otel_endpoint or "in-process"})
    return provider


def _instrument(provider: TracerProvider) -> None:
    _redact_tokens_in_urls()
    for instrumentor in _instrumentors():
        if not instrumentor.is_instrumented_by_opentelemetry:
            with warnings.catch_warnings():
                # the aiohttp instrumentation subclasses web.Application, which aiohttp
                # discourages with a DeprecationWarning; the subclass only adds a middleware
                warnings.simplefilter("ignore", DeprecationWarning)
                instrumentor.instrument(tracer_provider=provider)


def _redact_tokens_in_urls() -> None:
    """The aiohttp server instrumentation records each request's URL, redacting only the query
    parameters listed in `opentelemetry.util.http.PARAMS_TO_REDACT`: add the WebSocket's
    `token` (an access token) to that list, so no span carries one."""
    from opentelemetry.util import http as otel_http

    if "token" not in otel_http.PARAMS_TO_REDACT:
        otel_http.PARAMS_TO_REDACT.append("token")


def _instrumentors() -> tuple[Any, ...]:
    """The official instrumentations used (they are singletons: instrument once per process)."""
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    return (AioHttpServerInstrumentor(), AsyncPGInstrumentor(), RedisInstrumentor())  # type: ignore[no-untyped-call]


def teardown_tracing() -> None:
    """Undo `setup_tracing`'s instrumentation (tests); the provider stays installed, unused."""
    _state["enabled"] = False
    for instrumentor in _instrumentors():
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()


def carrier() -> Carrier:
    """The current span's context as a W3C carrier (empty when tracing is off)."""
    if not _state["enabled"]:
        return {}
    out: Carrier = {}
    inject(out)
    return out


@contextmanager
def span(
    name: str,
    *,
    parent: Carrier | None = None,
    root: bool = False,
    links: Sequence[Carrier] = (),
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: Any,
) -> Iterator[None]:
    """A span as the current one: child of `parent` (a carrier), or a new trace when `root`,
    else of whatever is current. A no-op when tracing is off."""
    if not _state["enabled"]:
        yield
        return
    if parent:
        context = extract(parent)
    elif root:
        context = otel_context.Context()
    else:
        context = None
    span_links = [Link(trace.get_current_span(extract(c)).get_span_context()) for c in links if c]
    with _tracer.start_as_current_span(
        name, context=context, kind=kind, links=span_links, attributes=attributes
    ):
        yield


def event(name: str, *, parent: Carrier, **attributes: Any) -> None:
    """A zero-length span under `parent` (e.g. the ack of a delivered message)."""
    if _state["enabled"] and parent:
        _tracer.start_span(name, context=extract(parent), attributes=attributes).end()
