"""A local push service for tests: HTTPS with a certificate of its own CA, recording every push.

It plays both ends a real push involves: the push service (it receives the node's POSTs and
answers as told: 201, or 404/410/500 for chosen subscriptions) and the browser (it made each
subscription's P-256 key pair and auth secret, and decrypts what arrives with them as RFC 8291
says, written here with `cryptography` alone, independently of the node's encoder). It also checks
the VAPID header (RFC 8292) against the node's public key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import trustme
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tests.support import free_port


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


@dataclass
class Browser:
    """One browser subscription: its endpoint on the push service and its keys."""

    endpoint: str
    token: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: uuid.uuid4().bytes)

    @property
    def public_bytes(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def subscription(self) -> dict[str, Any]:
        """As `JSON.stringify(pushSubscription)` writes it."""
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(self.public_bytes), "auth": b64url(self.auth)},
        }

    def decrypt(self, body: bytes) -> bytes:
        """RFC 8291 section 3.4 / RFC 8188: one aes128gcm record, keyid = the sender's key."""
        salt, rs, id_len = body[:16], int.from_bytes(body[16:20], "big"), body[20]
        sender_key = body[21 : 21 + id_len]
        ciphertext = body[21 + id_len :]
        assert id_len == 65 and len(ciphertext) <= rs, (id_len, rs, len(ciphertext))
        sender = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), sender_key)
        shared = self.private_key.exchange(ec.ECDH(), sender)
        key_info = b"WebPush: info\x00" + self.public_bytes + sender_key
        ikm = _hkdf(self.auth, shared, key_info, 32)
        cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
        nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
        content = padded.rstrip(b"\x00")
        assert content.endswith(b"\x02"), "the last record's delimiter"
        return content[:-1]


@dataclass
class Push:
    """One push as it arrived."""

    token: str
    headers: dict[str, str]
    body: bytes
    at: float
    payload: dict[str, Any] = field(default_factory=dict)


class PushService:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.origin = f"https://localhost:{self.port}"
        self.host = f"localhost:{self.port}"
        ca = trustme.CA()
        self.ca_file = directory / "push-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost").configure_cert(self._ssl)
        self.browsers: dict[str, Browser] = {}
        self.answers: dict[str, list[int]] = {}  # token -> statuses to answer, in turn
        self.pushes: list[Push] = []
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{token}", self._receive)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=self._ssl).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def browser(self, *answers: int) -> Browser:
        """A new subscription; the push service answers its pushes with `answers` in turn,
        then 201."""
        token = uuid.uuid4().hex
        browser = Browser(f"{self.origin}/push/{token}", token)
        self.browsers[token] = browser
        self.answers[token] = list(answers)
        return browser

    async def _receive(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if token not in self.browsers:
            return web.Response(status=404)
        push = Push(token, dict(request.headers), await request.read(), time.monotonic())
        push.payload = json.loads(self.browsers[token].decrypt(push.body))
        self.pushes.append(push)
        self._arrived.set()
        answers = self.answers[token]
        return web.Response(status=answers.pop(0) if answers else 201)

    def to(self, browser: Browser) -> list[Push]:
        return [p for p in self.pushes if p.token == browser.token]

    async def wait(self, count: int, browser: Browser | None = None, timeout: float = 15.0) -> None:
        """Until at least `count` pushes arrived (for `browser`, or in all)."""
        async with asyncio.timeout(timeout):
            while len(self.to(browser) if browser else self.pushes) < count:
                self._arrived.clear()
                await self._arrived.wait()


def check_vapid(push: Push, public_key: str, audience: str, subject: str) -> dict[str, Any]:
    """The push is signed as RFC 8292 says, by `public_key`; returns the JWT's claims."""
    scheme, _, params = push.headers["Authorization"].partition(" ")
    assert scheme == "vapid"
    fields = dict(part.split("=", 1) for part in params.split(","))
    assert fields["k"] == public_key
    point = b64url_decode(public_key)
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    assert jwt.get_unverified_header(fields["t"])["alg"] == "ES256"
    claims: dict[str, Any] = jwt.decode(
        fields["t"], key, algorithms=["ES256"], audience=audience, options={"require": ["exp"]}
    )
    assert claims["sub"] == subject
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600
    assert push.headers["Content-Encoding"] == "aes128gcm"
    assert int(push.headers["TTL"]) > 0
    return claims


async def poll(probe: Callable[[], Awaitable[Any]], done: Callable[[Any], bool]) -> None:
    """Poll PostgreSQL or Redis until `done(value)`: there is no event to wait on."""
    async with asyncio.timeout(10):
        while True:
            if done(await probe()):
                return
            await asyncio.sleep(0.02)
