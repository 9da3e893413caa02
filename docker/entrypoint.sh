#!/bin/sh
# Container entrypoint of the messenger node image.
#
# For the commands that need PostgreSQL and Redis (serve, migrate, cluster) it checks that both
# URLs are given, waits until both accept TCP connections (at most MESSENGER_WAIT_TIMEOUT seconds
# in all, default 60), then execs the node so that it is PID 1 and gets `docker stop`'s SIGTERM.
# Migrations are not run here: `serve` applies them itself under an advisory lock, so several
# nodes starting together are fine. Other arguments (chat, --help) go straight to the node.
# For a shell in the image: docker run --rm -it --entrypoint sh IMAGE
set -eu

case "${1:-}" in
  serve|migrate|cluster)
    # Unset URLs would make the node start embedded servers, which this image does not have.
    missing=""
    [ -n "${MESSENGER_DATABASE_URL:-}" ] || missing="$missing MESSENGER_DATABASE_URL"
    [ -n "${MESSENGER_REDIS_URL:-}" ] || missing="$missing MESSENGER_REDIS_URL"
    if [ -n "$missing" ]; then
      echo "entrypoint: refusing to start: set${missing}." >&2
      echo "entrypoint: this image has no embedded PostgreSQL/Redis; point the node at running servers" >&2
      echo "entrypoint: (postgresql://user:password@host:5432/db and redis://host:6379/0)." >&2
      exit 2
    fi

    # Prints host:port only, never the URL: it may hold a password.
    python - "$MESSENGER_DATABASE_URL" "$MESSENGER_REDIS_URL" <<'PY'
import os
import socket
import sys
import time
from urllib.parse import urlsplit

DEFAULT_PORTS = {"postgres": 5432, "postgresql": 5432, "redis": 6379, "rediss": 6379}
raw = os.environ.get("MESSENGER_WAIT_TIMEOUT") or "60"
try:
    timeout = float(raw)
except ValueError:
    sys.exit(f"entrypoint: MESSENGER_WAIT_TIMEOUT must be a number of seconds, not {raw!r}")
deadline = time.monotonic() + timeout

for url in sys.argv[1:]:
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:  # e.g. several hosts in one PostgreSQL URL
        host, port = None, None
    if not host or not port:  # unix sockets, multi-host URLs: let the node connect itself
        print(f"entrypoint: not waiting for {parts.scheme} (no single host:port in its URL)",
              flush=True)
        continue
    print(f"entrypoint: waiting for {parts.scheme} at {host}:{port} (up to {timeout:g}s)",
          flush=True)
    while True:
        left = deadline - time.monotonic()
        try:
            socket.create_connection((host, port), timeout=max(0.1, min(2.0, left))).close()
            break
        except OSError as exc:
            if time.monotonic() >= deadline:
                sys.exit(f"entrypoint: gave up: {parts.scheme} at {host}:{port} is not reachable"
                         f" after {timeout:g}s ({exc}); is it running? (MESSENGER_WAIT_TIMEOUT)")
            time.sleep(max(0.0, min(1.0, deadline - time.monotonic())))
    print(f"entrypoint: {parts.scheme} at {host}:{port} is up", flush=True)
PY
    ;;
esac

exec python -m node "$@"
