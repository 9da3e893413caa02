"""The node's one settings object.

This is the only module that reads the environment (and a `.env` file). Everything else receives a
`Settings` instance. Values are validated once, at start; `load_settings_or_exit` turns a bad value
into one line naming the variable and exit code 2, as the contract requires.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from node.cluster.connection import parse_redis_url

ENV_PREFIX = "MESSENGER_"


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
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".messenger")
    jwt_secret: str | None = None
    node_id: str = Field(default_factory=lambda: f"node-{uuid.uuid4().hex[:8]}")

    # --- auth ---------------------------------------------------------------------------------
    access_token_ttl: int = Field(900, ge=10, description="access token lifetime, seconds")
    refresh_token_ttl: int = Field(30 * 24 * 3600, ge=60, description="refresh token lifetime, s")
    bcrypt_rounds: int = Field(12, ge=4, le=31)

    # --- delivery -----------------------------------------------------------------------------
    backlog_limit: int = Field(
        1000, ge=1, description="newest unacked messages per chat on connect"
    )
    outbox_limit: int = Field(8192, ge=16, description="frames queued per socket before disconnect")
    ack_flush_interval: float = Field(0.1, gt=0, le=0.25, description="ack batching, seconds")
    mailbox_max: int = Field(
        10_000, ge=100, description="entries kept in a dormant user's Redis list"
    )
    mailbox_ttl: int = Field(7 * 24 * 3600, ge=60, description="Redis mailbox expiry, seconds")
    presence_grace: float = Field(2.0, ge=0, le=4.5, description="offline debounce, seconds")

    # --- limits -------------------------------------------------------------------------------
    max_body_bytes: int = Field(256 * 1024, ge=1024)
    max_frame_bytes: int = Field(64 * 1024, ge=1024)
    rate_burst: int = Field(1000, ge=1, description="messages a user may send in a burst")
    rate_per_second: float = Field(200.0, gt=0, description="sustained messages per user per s")
    ws_heartbeat: float = Field(30.0, gt=0, description="WebSocket ping interval, seconds")

    # --- actors and cluster -------------------------------------------------------------------
    chat_mailbox_size: int = Field(10_000, ge=16)
    user_mailbox_size: int = Field(10_000, ge=16)
    actor_idle_timeout: float = Field(120.0, gt=0, description="passivate an idle actor, seconds")
    lease_ttl: float = Field(5.0, ge=0.5, le=120, description="ownership lease, seconds")
    commit_timeout: float = Field(
        3.0, gt=0, le=60, description="one group-commit transaction at most, seconds"
    )
    heartbeat_interval: float = Field(1.0, gt=0, description="node membership heartbeat, seconds")
    redis_timeout: float = Field(2.0, gt=0, description="one Redis command, seconds")

    # --- operations ---------------------------------------------------------------------------
    db_pool_size: int = Field(16, ge=2, le=500)
    restart_budget: int = Field(
        10, ge=0, description="restarts of one part of the node per minute before it is given up"
    )
    shutdown_timeout: float = Field(10.0, gt=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"  # auto: text on a terminal
    embedded_start_timeout: float = Field(60.0, gt=0)

    # --- tracing: the standard OpenTelemetry variables (no MESSENGER_ prefix) -----------------
    otel_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
        ),
        description="tracing is on when an OTLP endpoint is given",
    )
    otel_service_name: str = Field("messenger-node", validation_alias="OTEL_SERVICE_NAME")
    otel_sdk_disabled: bool = Field(False, validation_alias="OTEL_SDK_DISABLED")

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

    @field_validator("jwt_secret")
    @classmethod
    def _secret_length(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("node_id")
    @classmethod
    def _node_id_shape(cls, value: str) -> str:
        if not value or len(value) > 64 or any(c.isspace() or c in ":{}" for c in value):
            raise ValueError("must be 1-64 characters without spaces, ':' or braces")
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
    path = settings.data_dir / "jwt_secret"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: nodes starting together on one data dir agree on the first secret written
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the writer may not have written yet
            if secret := path.read_text().strip():
                return secret
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty") from None
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as f:
        f.write(secret)
    return secret
