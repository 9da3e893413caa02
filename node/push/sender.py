"""One push over HTTPS (RFC 8030): the payload encrypted for the subscription (RFC 8291,
`aes128gcm`) and signed with the node's VAPID key (RFC 8292).

Encryption is pywebpush's encoder (`WebPusher.encode`, over http_ece) and the VAPID header is
py_vapid's; the request is ours, on aiohttp. pywebpush's own `webpush()` sends with `requests`,
which would block the event loop, and its `webpush_async` leaves no say over TLS trust (the CA
file of `MESSENGER_PUSH_CA_FILE`), redirects (never followed here: an allowed host must not send
the node elsewhere) or timeouts. Encrypting takes a fraction of a millisecond (one ECDH, one
AES-GCM record), so it runs on the loop.
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from pywebpush import WebPusher

from node.push.targets import origin
from node.push.vapid import VapidKey
from node.storage.push import PushSubscription


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # the push service took it
    GONE = "gone"  # 404/410: the subscription expired or was revoked; delete it
    RETRY = "retry"  # 429, 5xx, no answer: worth another try a little later
    REJECTED = "rejected"  # any other answer: trying again would not help


@dataclass(slots=True, frozen=True)
class PushResult:
    outcome: Outcome
    status: int | None  # the push service's HTTP status, None when it did not answer
    detail: str = ""


class PushSender:
    def __init__(
        self,
        vapid: VapidKey,
        *,
        ca_file: Path | None = None,
        ttl: int = 24 * 3600,
        timeout: float = 10.0,
        connections: int = 16,
    ) -> None:
        """`ttl`: how long the push service keeps a push for a device that is offline."""
        self._vapid = vapid
        self._ca_file = ca_file
        self._ttl = ttl
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._connections = connections

    def session(self) -> aiohttp.ClientSession:
        """An HTTP client for pushes (the caller closes it): the system's CAs plus the
        configured CA file, certificates always verified, no proxy from the environment."""
        context = ssl.create_default_context()
        if self._ca_file is not None:
            context.load_verify_locations(cafile=self._ca_file)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context, limit=self._connections),
            timeout=self._timeout,
            trust_env=False,
        )

    def request(
        self, sub: PushSubscription, payload: bytes, topic: str
    ) -> tuple[dict[str, str], bytes]:
        """The headers and encrypted body of one push."""
        info = {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
        body: bytes = WebPusher(info).encode(payload, "aes128gcm")["body"]
        headers = {
            "Authorization": self._vapid.authorization(origin(sub.endpoint)),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "TTL": str(self._ttl),
            "Urgency": "high",
            # a newer push with the same topic replaces one the push service still holds
            "Topic": topic,
        }
        return headers, body

    async def send(
        self, http: aiohttp.ClientSession, sub: PushSubscription, payload: bytes, topic: str
    ) -> PushResult:
        headers, body = self.request(sub, payload, topic)
        try:
            async with http.post(
                sub.endpoint, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                detail = "" if status < 300 else (await response.text())[:200]
        except (aiohttp.ClientError, TimeoutError) as exc:
            return PushResult(Outcome.RETRY, None, type(exc).__name__)
        if status < 300:
            return PushResult(Outcome.DELIVERED, status)
        if status in (404, 410):
            return PushResult(Outcome.GONE, status, detail)
        if status == 429 or status >= 500:
            return PushResult(Outcome.RETRY, status, detail)
        return PushResult(Outcome.REJECTED, status, detail)
