"""Reading typed values out of request bodies and query strings, with Matrix errors.

A missing required key is 400 ``M_MISSING_PARAM``; a key of the wrong type is 400
``M_INVALID_PARAM`` (Synapse's behaviour for both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar, overload

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.http import JsonDict, Request

T = TypeVar("T")

_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    dict: "an object",
    list: "an array",
}


def _check(body: JsonDict, key: str, expected: type[T], value: Any) -> T:
    # bool is a subclass of int in Python but not in JSON.
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise MatrixError("M_INVALID_PARAM", f"'{key}' must be {_TYPE_NAMES.get(expected, expected)}")


def require(body: JsonDict, key: str, expected: type[T]) -> T:
    """The value of a required key of the given JSON type."""
    if key not in body:
        raise MatrixError("M_MISSING_PARAM", f"Missing param: '{key}'")
    return _check(body, key, expected, body[key])


@overload
def optional(body: JsonDict, key: str, expected: type[T]) -> T | None: ...
@overload
def optional(body: JsonDict, key: str, expected: type[T], default: T) -> T: ...
def optional(body: JsonDict, key: str, expected: type[T], default: T | None = None) -> T | None:
    """The value of an optional key (absent or null gives `default`)."""
    value = body.get(key)
    if value is None:
        return default
    return _check(body, key, expected, value)


def query_int(
    request: Request, name: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    """An integer query parameter, clamped to `maximum`.

    Raises:
        MatrixError: ``M_INVALID_PARAM`` when it is not an integer or below `minimum`.
    """
    raw = request.query_param(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(
            "M_INVALID_PARAM", f"Query parameter '{name}' must be an integer"
        ) from None
    if value < minimum:
        raise MatrixError("M_INVALID_PARAM", f"Query parameter '{name}' must be >= {minimum}")
    return value if maximum is None else min(value, maximum)


def query_bool(request: Request, name: str, default: bool) -> bool:
    """A ``true``/``false`` query parameter."""
    raw = request.query_param(name)
    if raw is None:
        return default
    if raw not in ("true", "false"):
        raise MatrixError("M_INVALID_PARAM", f"Query parameter '{name}' must be true or false")
    return raw == "true"
