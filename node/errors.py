"""The one error hierarchy: each error knows its HTTP status and its contract `code`.

The HTTP middleware renders these as `{"error": {"code", "message"}}`; the WebSocket handler
renders them as `error` frames. Anything else that escapes becomes a 500 `internal_error` without
details (the details go to the log).
"""

from __future__ import annotations

from node.domain import SendStatus


class ApiError(Exception):
    status: int = 500
    code: str = "internal_error"
    message: str = "internal error"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        if code is not None:
            self.code = code

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the error body."""
        return {}


class MalformedJson(ApiError):
    status, code, message = 400, "malformed_json", "the body is not valid JSON"


class BadRequest(ApiError):
    status, code, message = 400, "bad_request", "bad request"


class Unauthorized(ApiError):
    status, code, message = 401, "unauthorized", "a valid access token is required"


class InvalidCredentials(ApiError):
    status, code, message = 401, "invalid_credentials", "wrong username or password"


class InvalidRefreshToken(ApiError):
    status, code, message = 401, "invalid_refresh_token", "the refresh token is not valid"


class Forbidden(ApiError):
    status, code, message = 403, "forbidden", "not allowed"


class NotMember(ApiError):
    """Anything but reading, on a chat the caller is not in (or that does not exist: the same
    answer, so ids cannot be probed)."""

    status, code, message = 404, "not_member", "no such chat, or you are not a member of it"


class NotFound(ApiError):
    status, code, message = 404, "not_found", "not found"


class Conflict(ApiError):
    status, code, message = 409, "conflict", "conflict"


class UsernameTaken(Conflict):
    code, message = "username_taken", "this username is taken"


class IdempotencyConflict(Conflict):
    code, message = "idempotency_conflict", "this client_msg_id was used in another chat"


class RequestTimeout(ApiError):
    """A body (JSON or an upload) that stalled or took too long: the connection is cut, so no
    client holds one forever."""

    status, code, message = 408, "request_timeout", "the request body did not arrive in time"


class TooLarge(ApiError):
    status, code, message = 413, "too_large", "too large"


class RangeNotSatisfiable(ApiError):
    status, code, message = 416, "range_not_satisfiable", "the range is outside the file"


class ValidationFailed(ApiError):
    status, code, message = 422, "validation_error", "invalid input"


class UnknownMedia(ValidationFailed):
    """An attachment that names no upload of the sender's (unknown, or someone else's)."""

    code, message = "unknown_media", "unknown media id in attachments"


class RateLimited(ApiError):
    status, code, message = 429, "rate_limited", "too many requests, slow down"

    def __init__(
        self, message: str | None = None, *, code: str | None = None, retry_after: int = 1
    ) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class Unavailable(ApiError):
    status, code, message = 503, "unavailable", "temporarily unavailable, try again"


class InternalError(ApiError):
    pass


_SEND_FAILURES: dict[SendStatus, type[ApiError]] = {
    "conflict": IdempotencyConflict,
    "not_member": NotMember,
    "rate_limited": RateLimited,
    "invalid": ValidationFailed,
    "unavailable": Unavailable,
    "failed": InternalError,
}


def send_failure(status: SendStatus) -> ApiError:
    """The error a failed send stands for; the same for a REST answer and an `error` frame."""
    return _SEND_FAILURES.get(status, InternalError)()
