"""Structured logs: a stable event name and fields, as JSON lines for machines or as text for
people.

Call sites log an event name and put data in `extra` (`log.info("chat.activated",
extra={"chat_id": 7})`); the formatters add time, level, the node id and, when a span is active,
the trace id (JSON also names the logger). The format is `MESSENGER_LOG_FORMAT` when it is set,
otherwise text when stderr is a terminal and JSON when it is not (a file, a pipe, a collector).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _trace_id() -> str | None:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - the SDK is a dependency
        return None
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class JsonFormatter(logging.Formatter):
    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "logger": record.name,
            "node_id": self._node_id,
        }
        trace_id = _trace_id()
        if trace_id:
            entry["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """For people reading a terminal: `time level node event key=value ...`."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self._node_id = node_id

    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _RESERVED and not k.startswith("_")
        )
        if trace_id := _trace_id():
            fields = f"{fields} trace_id={trace_id}"
        when = self.formatTime(record, "%H:%M:%S")
        line = f"{when} {record.levelname:<7} {self._node_id} {record.getMessage()} {fields}"
        if record.exc_info:
            line = line.rstrip() + "\n" + self.formatException(record.exc_info)
        return line.rstrip()


def resolve_format(fmt: str, stream: TextIO) -> str:
    """`json` or `text`: as set, or for `auto`, text when `stream` is a terminal."""
    if fmt != "auto":
        return fmt
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # a closed or odd stream
        return "json"


def configure_logging(*, level: str, fmt: str, node_id: str, stream: TextIO | None = None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    text = resolve_format(fmt, stream) == "text"
    handler.setFormatter(TextFormatter(node_id) if text else JsonFormatter(node_id))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log is one line per request: too chatty at INFO for a messaging node
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
