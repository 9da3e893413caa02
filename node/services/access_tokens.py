"""Short-lived JWT access tokens (HS256).

An access token carries `sub` (the user id as a string), `iat`, `exp` and a random `jti`. It is
checked without any I/O, so every node of a cluster sharing the secret accepts it until `exp`;
revocation happens through refresh tokens (see `node.services.auth`), which is why the lifetime is
short (`settings.access_token_ttl`).

Verification pins the algorithm to HS256 (a token saying `alg: none` or an asymmetric algorithm is
refused) and requires all four claims.

The HMAC key is SHA-256 of the configured secret (with a purpose label), not the secret itself: it
always has the 32 bytes HS256 wants (PyJWT warns below that, and the settings accept 16-character
secrets), and the same secret used for anything else later yields an unrelated key.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable

import jwt

from node.errors import Unauthorized
from node.ids import id_or_none

ALGORITHM = "HS256"
_REQUIRED = ["exp", "iat", "sub", "jti"]
_MAX_TOKEN_CHARS = 4096  # ours are ~200; refuse to parse anything absurd
_KEY_LABEL = b"messenger-node access token v1\0"


def signing_key(secret: str) -> bytes:
    """The HMAC key derived from the configured secret."""
    return hashlib.sha256(_KEY_LABEL + secret.encode("utf-8")).digest()


def invalid_token() -> Unauthorized:
    return Unauthorized("the access token is not valid", code="invalid_token")


def expired_token() -> Unauthorized:
    return Unauthorized("the access token has expired", code="token_expired")


class AccessTokens:
    """Issues and verifies access tokens with one secret and one lifetime."""

    def __init__(self, secret: str, ttl: int, *, clock: Callable[[], float] = time.time) -> None:
        self._key = signing_key(secret)
        self.ttl = ttl
        self._clock = clock

    def issue(self, user_id: int) -> str:
        """A token for `user_id`, valid for `ttl` seconds from now."""
        now = int(self._clock())
        claims = {"sub": str(user_id), "iat": now, "exp": now + self.ttl, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._key, algorithm=ALGORITHM)

    def verify(self, token: str) -> int:
        """The user id of a valid token. Raises `Unauthorized` with code `token_expired` for a
        token past its `exp` (signature checked first) and `invalid_token` for anything else."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise invalid_token()
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise expired_token() from None
        except jwt.PyJWTError:
            raise invalid_token() from None
        sub = claims["sub"]
        user_id = id_or_none(sub) if isinstance(sub, str) else None
        if user_id is None:  # e.g. past int64: no user can have it
            raise invalid_token()
        return user_id
