"""The node's one settings object.

This is the only module that reads the environment (and a `.env` file). Everything else receives a
`Settings` instance. Values are validated once, at start; `load_settings_or_exit` turns a bad value
into one line naming the variable and exit code 2, as the contract requires.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from node.cluster.connection import parse_redis_url

ENV_PREFIX = "MESSENGER_"

# The public browser push services: Chrome/Edge (FCM), Firefox (autopush), Safari, Windows (WNS).
# `*.` allows any subdomain; a host without a port allows the default https port only.
PUBLIC_PUSH_SERVICES = (
    "fcm.googleapis.com",
    "updates.push.services.mozilla.com",
    "*.push.apple.com",
    "*.notify.windows.com",
)


class Settings(BaseSettings):
    """Every setting of a node, with its default. Environment names are `MESSENGER_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # --- the contract's settings -------------------------------------------------------------
    host: str = Field("127.0.0.1", description="address to listen on (`0.0.0.0`: every interface)")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on")
    database_url: str | None = Field(
        None,
        description="PostgreSQL (`postgresql://user:password@host:5432/db`); unset: an embedded"
        " PostgreSQL under the data dir",
    )
    redis_url: str | None = Field(
        None,
        description="one Redis (`redis://`, `rediss://` with TLS, `unix://`) or a Redis Cluster"
        " (`redis+cluster://host:port[,host:port…]`, `rediss+cluster://` with TLS; Redis 7+; a few"
        " seed nodes, the rest is discovered); unset: an embedded Redis under the data dir",
    )
    data_dir: Path = Field(
        Path(".messenger"),
        description="the embedded servers' files (one node or `cluster` at a time) and the"
        " generated secrets (JWT secret, VAPID key); other files there are left alone",
    )
    jwt_secret: str | None = Field(
        None,
        description="HMAC key of access tokens, at least 16 characters, the same on every node;"
        " unset: generated once and kept in the data dir",
    )
    node_id: str = Field(
        default_factory=lambda: f"node-{uuid.uuid4().hex[:8]}",
        description="this node's name in logs, traces, `ready` frames and `/healthz` (1-64"
        " characters without spaces, `:` or braces)",
    )

    # --- auth ---------------------------------------------------------------------------------
    access_token_ttl: int = Field(900, ge=10, description="access token lifetime, seconds")
    refresh_token_ttl: int = Field(
        30 * 24 * 3600, ge=60, description="refresh token lifetime, seconds"
    )
    bcrypt_rounds: int = Field(
        12, ge=4, le=31, description="bcrypt cost of new password hashes (+1 doubles a login's CPU)"
    )
    auth_throttle: bool = Field(
        True,
        description="`false`: no login/registration throttling and no fair hashing gate"
        " (benchmarks, load tests, trusted networks); message rate limits stay",
    )
    login_limit_account: str = Field(
        "10/minute;100/hour",
        description="login attempts per account across the cluster (moving windows; 429 above)",
    )
    login_limit_address: str = Field(
        "30/minute;300/hour",
        description="login attempts per client address across the cluster (429 above)",
    )
    register_limit_address: str = Field(
        "10/minute;50/hour",
        description="registrations per client address across the cluster (429 above)",
    )
    trusted_proxies: str = Field(
        "",
        description="comma-separated networks of reverse proxies whose X-Forwarded-For names"
        " the client (throttling is per client address)",
    )
    hash_workers: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        le=64,
        description="password hashes computed at once (threads)",
    )
    hash_queue: int = Field(
        32, ge=1, description="logins/registrations waiting for a hashing worker (429 above)"
    )

    # --- delivery -----------------------------------------------------------------------------
    backlog_limit: int = Field(
        1000,
        ge=1,
        description="newest unacked messages per chat sent on connect (a `gap` frame for older)",
    )
    outbox_limit: int = Field(
        8192, ge=16, description="frames queued for one socket; past it the socket is closed (1013)"
    )
    close_grace: float = Field(
        2.0,
        gt=0,
        le=60,
        description="a socket that cannot take its close frame is cut after this, seconds",
    )
    ack_flush_interval: float = Field(
        0.1, gt=0, le=0.25, description="acks are written in batches at least this often, seconds"
    )
    mailbox_max: int = Field(
        10_000,
        ge=100,
        description="entries kept in the Redis mailbox of a user with no device connected",
    )
    mailbox_ttl: int = Field(7 * 24 * 3600, ge=60, description="Redis mailbox expiry, seconds")
    presence_grace: float = Field(
        2.0,
        ge=0,
        le=4.5,
        description="offline is announced after the last device has been gone this long, seconds",
    )
    presence_interval: float = Field(
        1.0,
        gt=0,
        le=2.0,
        description="presence changes are sent in batches this often: at most one `presence`"
        " frame per device per interval, seconds",
    )
    presence_group_limit: int = Field(
        200,
        ge=2,
        description="members of chats larger than this are not told each other's presence"
        " (a client asks with `presence_query`)",
    )

    # --- limits -------------------------------------------------------------------------------
    max_body_bytes: int = Field(
        256 * 1024, ge=1024, description="largest JSON request body, bytes (413 above)"
    )
    max_frame_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="largest WebSocket frame, bytes (an error frame above; 4 times it: closed)",
    )
    rate_burst: int = Field(1000, ge=1, description="messages a user may send in a burst, per node")
    rate_per_second: float = Field(
        200.0, gt=0, description="sustained messages per user per second, per node"
    )
    ws_heartbeat: float = Field(30.0, gt=0, description="WebSocket ping interval, seconds")
    body_timeout: float = Field(
        10.0, gt=0, description="a JSON request body must arrive within this, seconds (408)"
    )
    keepalive_timeout: float = Field(
        30.0, gt=0, description="an HTTP connection waiting for a request is closed after, seconds"
    )
    signal_interval: float = Field(
        0.5,
        gt=0,
        le=5,
        description="per chat and connection, one `typing` and one `read` frame go on per"
        " interval, seconds (reads coalesced, the latest kept)",
    )

    # --- media -------------------------------------------------------------------------------
    media_max_bytes: int = Field(
        25 * 1024 * 1024, ge=1024, description="largest upload, bytes (413 above)"
    )
    media_store: Literal["postgres", "s3"] = Field(
        "postgres",
        description="where new uploads' bytes go (metadata is always in PostgreSQL; media already"
        " stored stay served from where they are)",
    )
    media_s3_endpoint: str | None = Field(
        None, description="S3-compatible endpoint URL; unset: AWS S3"
    )
    media_s3_bucket: str | None = Field(
        None, validate_default=True, description="the bucket; required with `s3`"
    )
    media_s3_region: str = Field("us-east-1", description="S3 region")
    media_s3_prefix: str = Field("media/", description="key prefix of media objects")
    media_s3_access_key_id: str | None = Field(
        None,
        description="S3 access key; unset: botocore's usual chain (environment, profile, role)",
    )
    media_s3_secret_access_key: str | None = Field(
        None, description="S3 secret key; unset: botocore's usual chain"
    )
    media_read_timeout: float = Field(
        30.0, gt=0, description="an upload that sends nothing for this long is cut (408), seconds"
    )
    media_upload_timeout: float = Field(
        600.0, gt=0, description="an upload that takes longer than this is cut (408), seconds"
    )
    media_cleanup_age: float = Field(
        24 * 3600.0, ge=1, description="uploads never attached are deleted after this, seconds"
    )
    media_max_pixels: int = Field(
        40_000_000,
        ge=1,
        description="images with more pixels (all frames) are not decoded, kept as plain files",
    )
    media_image_workers: int = Field(
        2, ge=1, le=64, description="images processed at once (threads)"
    )

    # --- actors and cluster -------------------------------------------------------------------
    chat_mailbox_size: int = Field(
        10_000, ge=16, description="commands a chat actor holds (a send past it: `rate_limited`)"
    )
    user_mailbox_size: int = Field(
        10_000, ge=16, description="messages a user actor holds (past it the actor restarts)"
    )
    actor_idle_timeout: float = Field(
        120.0, gt=0, description="an idle actor is stopped after this, seconds"
    )
    lease_ttl: float = Field(
        5.0,
        ge=0.5,
        le=120,
        description="chat ownership lease, seconds (a dead node's chats move after about this)",
    )
    commit_timeout: float = Field(
        3.0, gt=0, le=60, description="one group-commit transaction at most, seconds"
    )
    heartbeat_interval: float = Field(
        1.0, gt=0, description="node membership heartbeat, seconds (dead after 3 missed)"
    )
    redis_timeout: float = Field(2.0, gt=0, description="one Redis command at most, seconds")

    # --- Web Push -----------------------------------------------------------------------------
    push_include_text: bool = Field(
        False, description="put the message text into pushes (push services then carry it)"
    )
    push_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        PUBLIC_PUSH_SERVICES,
        description="push-service hosts subscriptions may name (comma-separated; `*.` for any"
        " subdomain, `host:port` for another port than 443)",
    )
    push_coalesce: float = Field(
        5.0, ge=0.1, le=300, description="at most one push per user per this many seconds"
    )
    push_ca_file: Path | None = Field(
        None, description="extra CA certificates trusted for push services (besides the system's)"
    )
    vapid_private_key: str | None = Field(
        None,
        description="VAPID key: URL-safe base64 of the raw P-256 private key, or PEM; unset:"
        " generated once and kept in the data dir",
    )
    vapid_subject: str = Field(
        "mailto:admin@localhost",
        description="VAPID contact (`mailto:` or `https:`); set a real one",
    )

    # --- operations ---------------------------------------------------------------------------
    db_pool_size: int = Field(16, ge=2, le=500, description="PostgreSQL connections per node")
    restart_budget: int = Field(
        10, ge=0, description="restarts of one part of the node per minute before it is given up"
    )
    shutdown_timeout: float = Field(10.0, gt=0, description="a graceful stop at most, seconds")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="lowest level logged"
    )
    log_format: Literal["auto", "json", "text"] = Field(
        "auto", description="`auto`: text on a terminal, JSON lines otherwise"
    )
    embedded_start_timeout: float = Field(
        60.0, gt=0, description="starting the embedded servers at most, seconds"
    )

    # --- tracing: the standard OpenTelemetry variables (no MESSENGER_ prefix) -----------------
    otel_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        description="OTLP/HTTP endpoint: tracing is on when one is given",
    )
    otel_service_name: str = Field(
        "messenger-node",
        validation_alias="OTEL_SERVICE_NAME",
        description="`service.name` of the node's spans",
    )
    otel_sdk_disabled: bool = Field(
        False, validation_alias="OTEL_SDK_DISABLED", description="`true`: no tracing at all"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgres://", "postgresql://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """One Redis (`redis://`, `rediss://`, `unix://`) or a Redis Cluster
        (`redis+cluster://host:port[,host:port…]`, `rediss+cluster://` with TLS)."""
        if value is not None:
            parse_redis_url(value)  # raises ValueError saying what is wrong
        return value

    @field_validator("login_limit_account", "login_limit_address", "register_limit_address")
    @classmethod
    def _rate_limits(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError("must be limits like '10/minute;100/hour'") from None
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        try:
            _parse_networks(value)
        except ValueError:
            raise ValueError("must be comma-separated networks like 10.0.0.0/8,::1") from None
        return value

    @property
    def trusted_networks(self) -> tuple[IPNetwork, ...]:
        """`trusted_proxies` parsed."""
        return _parse_networks(self.trusted_proxies)

    @field_validator("presence_interval")
    @classmethod
    def _presence_within_5s(cls, value: float, info: ValidationInfo) -> float:
        """Offline reaches contacts within 5 s (the contract): grace, then the next batch."""
        grace = info.data.get("presence_grace")
        if grace is not None and grace + value > 4.5:
            raise ValueError("presence_grace + presence_interval must be at most 4.5 s")
        return value

    @field_validator("jwt_secret")
    @classmethod
    def _secret_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("push_allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [h for h in (part.strip() for part in value.split(",")) if h]
        if isinstance(value, list | tuple):
            hosts = tuple(str(h).strip().lower() for h in value)
            if any(not h or "/" in h or "@" in h or "*" in h.removeprefix("*.") for h in hosts):
                raise ValueError("must be host names (`*.` for subdomains), comma-separated")
            return hosts
        return value

    @field_validator("push_ca_file")
    @classmethod
    def _ca_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError("no such file")
        return value

    @field_validator("vapid_private_key")
    @classmethod
    def _vapid_key_shape(cls, value: str | None) -> str | None:
        if value is None or value.lstrip().startswith("-----BEGIN"):
            return value
        try:
            raw = base64.urlsafe_b64decode(value.strip() + "=" * (-len(value.strip()) % 4))
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("must be URL-safe base64 of a 32-byte P-256 private key, or PEM")
        return value.strip()

    @field_validator("vapid_subject")
    @classmethod
    def _vapid_subject(cls, value: str) -> str:
        if not value.startswith(("mailto:", "https://")) or len(value) < 10:
            raise ValueError("must be a mailto: or https:// URL")
        return value

    @field_validator("node_id")
    @classmethod
    def _node_id_shape(cls, value: str) -> str:
        if not value or len(value) > 64 or any(c.isspace() or c in ":{}" for c in value):
            raise ValueError("must be 1-64 characters without spaces, ':' or braces")
        return value

    @field_validator("media_s3_endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("media_s3_bucket")
    @classmethod
    def _s3_needs_a_bucket(cls, value: str | None, info: ValidationInfo) -> str | None:
        if not value and info.data.get("media_store") == "s3":
            raise ValueError("is required when MESSENGER_MEDIA_STORE=s3")
        return value

    @property
    def embedded(self) -> bool:
        """True when at least one of PostgreSQL and Redis is to be started in-process."""
        return self.database_url is None or self.redis_url is None

    @property
    def forward_timeout(self) -> float:
        """How long a send forwarded to the chat's owner on another node waits for its answer:
        the owner's commit bound plus time to claim the chat and cross Redis twice."""
        return self.commit_timeout + 2.0

    @property
    def send_timeout(self) -> float:
        """The longest a REST send waits for its outcome (a backstop: every path answers
        sooner)."""
        return self.forward_timeout + 1.0

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with some fields replaced (validated), e.g. resolved embedded URLs."""
        return type(self).model_validate({**self.model_dump(), **changes})


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _parse_networks(value: str) -> tuple[IPNetwork, ...]:
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in value.split(",")
        if part.strip()
    )


def load_settings(**overrides: object) -> Settings:
    """Read the environment (and `.env`) once; `overrides` win over both."""
    return Settings(**overrides)  # type: ignore[arg-type]


def load_settings_or_exit(**overrides: object) -> Settings:
    """As `load_settings`, but a bad value prints one line naming the variable and exits 2."""
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        name = field if field.startswith("OTEL_") else ENV_PREFIX + field.upper()
        print(f"invalid setting {name}: {first['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def resolve_jwt_secret(settings: Settings) -> str:
    """The configured secret, or one generated once and kept in the data dir (mode 0600)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    return kept_secret(settings.data_dir, "jwt_secret", lambda: secrets.token_urlsafe(48))


def kept_secret(data_dir: Path, name: str, make: Callable[[], str]) -> str:
    """The secret kept in `data_dir/name`, made by `make()` and written (mode 0600) by the first
    node to get there: nodes starting together on one data dir agree on the first one written."""
    path = data_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: only one writer; everyone else reads what it wrote
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the writer may not have written yet
            if secret := path.read_text().strip():
                return secret
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty") from None
    secret = make()
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret
