"""Bounded I/O at the edge, over a real node and raw sockets: a body that stops coming, a
connection that never sends a request (or never finishes one), a keep-alive connection left idle
are all cut within a stated bound; a client that goes away mid-request costs a debug line, not an
error with a traceback."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from node.http.protocol import LINGERING_TIME
from tests.support import Response, assert_error

BODY_TIMEOUT = 0.5
KEEPALIVE = 0.5


async def connect(server: TestServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    assert server.port is not None
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_until_closed(reader: asyncio.StreamReader, bound: float) -> tuple[bytes, float]:
    """Everything the node sends until it closes the connection; (data, seconds it took).
    Fails if the connection is still open after `bound` seconds."""
    started = time.monotonic()
    async with asyncio.timeout(bound):
        data = await reader.read()
    return data, time.monotonic() - started


def response_of(data: bytes) -> Response:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return Response(status, json.loads(body) if body else None)


class EventCounter(logging.Handler):
    """Counts log records of one event; `reached` is set once `wanted` of them came."""

    def __init__(self, event: str, wanted: int) -> None:
        super().__init__(logging.DEBUG)
        self.event, self.wanted, self.count = event, wanted, 0
        self.reached = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == self.event:
            self.count += 1
            if self.count >= self.wanted:
                self.reached.set()


@pytest.fixture
async def edge(node_api: Callable[..., Any]) -> TestServer:
    server, _api = await node_api(body_timeout=BODY_TIMEOUT, keepalive_timeout=KEEPALIVE)
    return server


async def test_a_body_that_stops_coming_is_408_and_cut(edge: TestServer) -> None:
    reader, writer = await connect(edge)
    writer.write(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50\r\n\r\n{"
    )
    await writer.drain()
    bound = BODY_TIMEOUT + LINGERING_TIME + 1.0
    data, took = await read_until_closed(reader, bound)
    writer.close()
    assert_error(response_of(data), 408, "request_timeout")
    assert BODY_TIMEOUT <= took <= bound
    print(f"\nslow body: 408 and cut after {took:.2f} s (body_timeout {BODY_TIMEOUT} s)")


async def test_a_connection_that_sends_nothing_is_cut(edge: TestServer) -> None:
    reader, writer = await connect(edge)
    data, _ = await read_until_closed(reader, KEEPALIVE + 1.5)
    writer.close()
    assert data == b""


async def test_a_request_that_never_finishes_its_headers_is_cut(edge: TestServer) -> None:
    reader, writer = await connect(edge)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: still typ")
    await writer.drain()
    data, _ = await read_until_closed(reader, KEEPALIVE + 1.5)
    writer.close()
    assert data == b""


async def test_an_idle_keep_alive_connection_is_cut(edge: TestServer) -> None:
    reader, writer = await connect(edge)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)
    rest, _ = await read_until_closed(reader, KEEPALIVE + 1.5)  # then nothing more: cut
    writer.close()
    assert rest == b""


async def test_clients_that_go_away_mid_body_are_debug_lines(
    edge: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each client announces a body, waits until the node is ready to read it (`100 Continue`,
    sent just before the handler runs), sends one byte of it and drops the connection."""

    async def abort_mid_body() -> None:
        reader, writer = await connect(edge)
        writer.write(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50\r\nExpect: 100-continue\r\n\r\n"
        )
        await writer.drain()
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100")
        writer.write(b"{")
        await writer.drain()
        writer.transport.abort()

    gone = EventCounter("http.client_gone", wanted=50)
    logging.getLogger("node.http.middleware").addHandler(gone)
    try:
        with caplog.at_level(logging.DEBUG):
            await asyncio.gather(*(abort_mid_body() for _ in range(50)))
            async with asyncio.timeout(10):  # the node notices each loss on its own
                await gone.reached.wait()
    finally:
        logging.getLogger("node.http.middleware").removeHandler(gone)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert loud == [], [(r.name, r.msg) for r in loud]
