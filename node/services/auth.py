"""Accounts and tokens: registration, login, refresh-token rotation, logout.

Refresh tokens are opaque random strings (`secrets.token_urlsafe(32)`); only their SHA-256 digest
is stored, so a leaked database does not hand out sessions. Each login starts a family (a uuid4);
each refresh spends the presented token and issues its successor in the same family. Presenting a
token that was already spent means it leaked: the store revokes the whole family, so both the
thief and the owner have to log in again.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from node import errors, storage
from node.config import Settings
from node.domain import Tokens, User
from node.services.access_tokens import AccessTokens, invalid_token
from node.services.auth_throttle import AuthThrottle
from node.services.hashing import HashingGate
from node.services.passwords import PasswordHasher
from node.storage import CONNECTION_ERRORS, Storage

log = logging.getLogger(__name__)


def _digest(refresh_token: str) -> bytes:
    return hashlib.sha256(refresh_token.encode("utf-8")).digest()


class AuthService:
    """Passwords, access tokens and refresh-token families of all users."""

    def __init__(
        self,
        storage: Storage,
        settings: Settings,
        jwt_secret: str,
        *,
        gate: HashingGate,
        throttle: AuthThrottle,
    ) -> None:
        self._storage = storage
        self._refresh_ttl = timedelta(seconds=settings.refresh_token_ttl)
        self._passwords = PasswordHasher(settings.bcrypt_rounds)
        self._access = AccessTokens(jwt_secret, settings.access_token_ttl)
        self._gate = gate
        self._throttle = throttle

    async def register(self, username: str, password: str, address: str) -> User:
        """A new user. Usernames are unique regardless of case: `errors.UsernameTaken` (409).
        Throttled per client `address` and per username: `errors.RateLimited` (429), before
        any hashing."""
        async with self._gate.admit(address) as ticket:
            await self._throttle.register(username, address)
            password_hash = await self._passwords.hash(password, ticket)
        try:
            user = await self._storage.users.create(username, password_hash)
        except storage.UsernameTaken:
            raise errors.UsernameTaken() from None
        log.info("auth.registered", extra={"user_id": user.id})
        return user

    async def login(self, username: str, password: str, address: str) -> Tokens:
        """Tokens of a new family. An unknown username and a wrong password fail alike (401
        `invalid_credentials`) and take about as long: both spend one bcrypt check. Throttled
        per client `address` and per account: `errors.RateLimited` (429), before any hashing;
        the hashing itself takes its turn at the node's fair gate."""
        async with self._gate.admit(address) as ticket:
            await self._throttle.login(username, address)
            found = await self._storage.users.credentials(username)
            if found is None:
                await self._passwords.check_absent(password, ticket)
                self._gate.failed(address)
                log.info("auth.login_refused")
                raise errors.InvalidCredentials()
            user, password_hash = found
            if not await self._passwords.check(password, password_hash, ticket):
                self._gate.failed(address)
                log.info("auth.login_refused", extra={"user_id": user.id})
                raise errors.InvalidCredentials()
        tokens = await self._issue(user.id, uuid.uuid4())
        log.info("auth.login", extra={"user_id": user.id})
        return tokens

    async def refresh(self, refresh_token: str) -> Tokens:
        """Spend `refresh_token` and issue its successor in the same family. An unknown,
        expired, revoked or already spent token is 401 `invalid_refresh_token`; a spent one also
        revokes its family (done by `RefreshTokenStore.spend` in the same transaction)."""
        spent = await self._storage.tokens.spend(_digest(refresh_token))
        if spent is None:
            log.info("auth.refresh_refused")
            raise errors.InvalidRefreshToken()
        return await self._issue(spent.user_id, spent.family_id)

    async def logout(self, user_id: int, refresh_token: str) -> None:
        """Revoke the family of `refresh_token` if it is `user_id`'s; anything else is a no-op,
        so logging out twice, or with a stale token, is not an error."""
        revoked = await self._storage.tokens.revoke_family_of(_digest(refresh_token), user_id)
        log.info("auth.logout", extra={"user_id": user_id, "revoked": revoked})

    async def authenticate(self, access_token: str) -> int:
        """The user id of a valid access token whose user exists. `errors.Unauthorized` with
        code `invalid_token` or `token_expired` otherwise; `errors.Unavailable` (503) while
        PostgreSQL cannot be reached. The signature is checked first
        (no I/O), so only a token this node's secret made costs one primary-key lookup: a
        token outliving its user must be a 401, not a failure deeper down (a foreign key)."""
        user_id = self._access.verify(access_token)
        try:
            exists = await self._storage.reads.user_exists(user_id)  # batched
        except CONNECTION_ERRORS:
            raise errors.Unavailable("the database cannot be reached, try again") from None
        if not exists:
            raise invalid_token()
        return user_id

    async def _issue(self, user_id: int, family_id: uuid.UUID) -> Tokens:
        refresh_token = secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + self._refresh_ttl
        await self._storage.tokens.issue(user_id, family_id, _digest(refresh_token), expires_at)
        return Tokens(
            access_token=self._access.issue(user_id),
            refresh_token=refresh_token,
            expires_in=self._access.ttl,
        )
