"""What aiohttp answers and logs by itself, held to the contract.

aiohttp parses requests before any middleware runs, and answers a request it cannot parse (a
header over `max_line_size`, a bad request line, an invalid character in the URL) from
`RequestHandler.handle_error`: a plain-text body that echoes the offending input, and an
error-level log line with a traceback that quotes it (the first bytes of a `?token=` URL, say).
aiohttp has no hook for this (aio-libs/aiohttp#3287), so `install()` replaces that one method:
the answer becomes the contract's JSON error without any input, and the log a debug line naming
the kind of error only. A 500 from there (an exception that escaped the error middleware, which
should not happen) stays an error with its traceback, without the URL.

`handler_args` are aiohttp's per-connection settings carried by the application itself (they win
over the runner's), so a node served by `run_app` and one in a test server behave alike:

- `keepalive_timeout`: a connection waiting for a request (idle between requests, or one that
  never finishes its request line and headers) is closed after this long;
- `lingering_time`: after answering without reading the whole body (a 401 to a large POST, a 408
  to a body that stopped coming), the rest is read and dropped for at most this long, then the
  connection is closed;
- `handler_cancellation` off (aiohttp's default for `run_app`; its test server turns it on): a
  handler runs to its end even if the client went away, so a send being stored is answered
  into the void rather than cut at an arbitrary await; a body the client stops sending fails
  the read instead (a debug line, see `node.http.middleware`);
- an access logger that never writes the query string (it may hold an access token).
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_protocol import RequestHandler

from node.http.middleware import error_for_status

log = logging.getLogger(__name__)

LINGERING_TIME = 2.0


class AccessLogger(AbstractAccessLogger):
    """One structured line per request, with the path but never the query string."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "http.access",
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status,
                "duration": round(time, 6),
            },
        )


def handler_args(*, keepalive_timeout: float) -> dict[str, Any]:
    """The per-connection settings of the node's aiohttp server (see the module docstring)."""
    return {
        "handler_cancellation": False,
        "keepalive_timeout": keepalive_timeout,
        "lingering_time": LINGERING_TIME,
        "access_log_class": AccessLogger,
    }


def _handle_error(
    self: RequestHandler,
    request: web.BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """`RequestHandler.handle_error`, answering in the contract's shape without echoing input."""
    if status >= 500:
        log.error("http.unhandled", extra={"method": request.method}, exc_info=exc)
    else:
        log.debug("http.bad_request", extra={"status": status, "error": type(exc).__name__})
    if request.writer.output_size > 0:  # as aiohttp: a response is under way, the link is broken
        raise ConnectionError("a response was already sent: cannot send an error")
    response = error_for_status(status)
    response.force_close()
    return response


def install() -> None:
    """Answer aiohttp's own protocol errors in the contract's shape (idempotent)."""
    RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
