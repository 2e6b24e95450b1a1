"""Errors that cross module boundaries.

`MatrixError` is the one way a request fails on purpose: it is raised anywhere below the HTTP
edge and rendered once, by the ASGI app, as `{"errcode", "error", **extra}` with its status.
"""

from __future__ import annotations

from typing import Any

# Default HTTP status for each errcode (client-server API, "Standard error response").
# An errcode that is not here defaults to 400.
ERRCODE_STATUS: dict[str, int] = {
    "M_FORBIDDEN": 403,
    "M_UNKNOWN_TOKEN": 401,
    "M_MISSING_TOKEN": 401,
    "M_USER_LOCKED": 401,
    "M_BAD_JSON": 400,
    "M_NOT_JSON": 400,
    "M_NOT_FOUND": 404,
    "M_LIMIT_EXCEEDED": 429,
    "M_UNRECOGNIZED": 404,
    "M_UNKNOWN": 400,
    "M_UNAUTHORIZED": 401,
    "M_USER_DEACTIVATED": 403,
    "M_USER_IN_USE": 400,
    "M_INVALID_USERNAME": 400,
    "M_ROOM_IN_USE": 400,
    "M_INVALID_ROOM_STATE": 400,
    "M_UNSUPPORTED_ROOM_VERSION": 400,
    "M_INCOMPATIBLE_ROOM_VERSION": 400,
    "M_BAD_STATE": 400,
    "M_GUEST_ACCESS_FORBIDDEN": 403,
    "M_MISSING_PARAM": 400,
    "M_INVALID_PARAM": 400,
    "M_TOO_LARGE": 413,
    "M_EXCLUSIVE": 400,
    "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM": 403,
    "M_THREEPID_DENIED": 403,
    "M_WEAK_PASSWORD": 400,
    "M_BAD_ALIAS": 400,
}


class MatrixError(Exception):
    """A request failed in a way the Matrix spec names; rendered as a Matrix error JSON.

    Args:
        errcode: the Matrix error code, e.g. ``M_FORBIDDEN``.
        message: human-readable text for the ``error`` field.
        status: HTTP status; defaults from `ERRCODE_STATUS`.
        extra: further top-level keys for the response body (e.g. ``retry_after_ms``).
        headers: further response headers (e.g. ``Retry-After``).
    """

    def __init__(
        self,
        errcode: str,
        message: str,
        *,
        status: int | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{errcode}: {message}")
        self.errcode = errcode
        self.message = message
        self.status = status if status is not None else ERRCODE_STATUS.get(errcode, 400)
        self.extra = extra or {}
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        """The response body: errcode, error and any extra keys."""
        return {"errcode": self.errcode, "error": self.message, **self.extra}


class InteractiveAuthRequired(Exception):
    """Raised when a user-interactive-auth endpoint needs (more) auth stages.

    Rendered as 401 with the UIA body: ``flows``, ``params``, ``session``, ``completed`` and,
    when a stage failed, ``errcode``/``error``.
    """

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__("user-interactive authentication required")
        self.body = body


class ConfigError(Exception):
    """Raised while loading or validating configuration: a bad key, type or combination.

    The message names every offending key (with its path, e.g. ``http.port``).
    """


class StartupError(Exception):
    """Raised when the server cannot start for a reason outside its config file's syntax.

    For example a port already in use, an address that is not this machine's, or a data dir
    or database that cannot be created or opened. The message names the cause and the config
    key to change (e.g. ``http.port``); the command prints it as one line and exits 1.
    """
