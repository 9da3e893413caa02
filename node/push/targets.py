"""What a push subscription may name: checked once, when it is stored.

The endpoint is a URL the node will POST to, so it must be `https` on a push service the operator
allows (`MESSENGER_PUSH_ALLOWED_HOSTS`): nothing else, not an address on the node's own network.
The keys must be what RFC 8291 needs: `p256dh` a P-256 public point (65 bytes, uncompressed) and
`auth` a 16-byte secret, URL-safe base64; a subscription that could never be encrypted to is
refused now rather than failing at every push.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import ec

from node.push.vapid import b64url, b64url_decode

MAX_ENDPOINT = 2048


class InvalidSubscription(ValueError):
    """The subscription cannot be used; the message says why (for a 422)."""


@dataclass(slots=True, frozen=True)
class PushTarget:
    endpoint: str
    p256dh: str  # URL-safe base64 without padding
    auth: str


def host_allowed(host: str, port: int | None, allowed: Iterable[str]) -> bool:
    """`host[:port]` matches an entry: `name` (port 443 only), `name:port`, or `*.domain` (any
    subdomain of it, port 443)."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        name, _, entry_port = entry.partition(":")
        if (port or 443) != (int(entry_port) if entry_port.isdigit() else 443):
            continue
        if name.startswith("*."):
            if host.endswith(name[1:]) and len(host) > len(name) - 1:
                return True
        elif host == name:
            return True
    return False


def origin(endpoint: str) -> str:
    """`scheme://host[:port]` of an endpoint: the VAPID token's audience."""
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


def check_subscription(
    endpoint: str, p256dh: str, auth: str, allowed_hosts: Iterable[str]
) -> PushTarget:
    """The subscription normalised, or InvalidSubscription."""
    if len(endpoint) > MAX_ENDPOINT:
        raise InvalidSubscription("endpoint is too long")
    try:
        parts = urlsplit(endpoint)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise InvalidSubscription("endpoint is not a URL") from None
    if parts.scheme != "https":
        raise InvalidSubscription("endpoint must be an https URL")
    if not host or parts.username is not None or parts.password is not None or parts.fragment:
        raise InvalidSubscription("endpoint must be a plain https URL of a push service")
    if not host_allowed(host, port, allowed_hosts):
        raise InvalidSubscription("endpoint is not on an allowed push service")
    return PushTarget(endpoint, _public_key(p256dh), _auth_secret(auth))


def _public_key(text: str) -> str:
    try:
        raw = b64url_decode(text)
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        raise InvalidSubscription(
            "keys.p256dh must be a P-256 public key, URL-safe base64"
        ) from None
    if len(raw) != 65:
        raise InvalidSubscription("keys.p256dh must be an uncompressed P-256 point (65 bytes)")
    return b64url(raw)


def _auth_secret(text: str) -> str:
    try:
        raw = b64url_decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        raise InvalidSubscription("keys.auth must be 16 bytes, URL-safe base64")
    return b64url(raw)
