"""Messenger node: real-time messaging over WebSocket and REST, on actors, PostgreSQL and Redis."""

__version__ = "0.1.0"
