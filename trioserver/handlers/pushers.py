"""The pusher API: ``GET /pushers`` and ``POST /pushers/set`` (spec "Push Notifications").

A pusher belongs to the device whose access token set it: deleting the device (logging out,
``DELETE /devices``, a password change that logs out other devices, deactivation) deletes its
pushers, as Synapse does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

from trioserver.errors import MatrixError
from trioserver.stores.pushers import NewPusher

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.handlers.auth import Requester
    from trioserver.handlers.push_notification import JsonDict
    from trioserver.stores.pushers import PusherRow, PusherStore

T = TypeVar("T")

# Spec "POST /pushers/set": app_id "SHOULD be no more than 64 characters", pushkey "MUST be
# at most 512 bytes".
MAX_APP_ID_CHARS = 64
MAX_PUSHKEY_BYTES = 512
# Each pusher is a task that POSTs for every notifying event: a bound keeps one user from
# making the server send thousands of requests per message (a device needs one or two).
MAX_PUSHERS_PER_USER = 50
# The Push Gateway API's only endpoint; Synapse refuses other paths.
PUSH_PATH = "/_matrix/push/v1/notify"
_REQUIRED = (
    "kind",
    "app_id",
    "app_display_name",
    "device_display_name",
    "pushkey",
    "lang",
    "data",
)


def _typed(body: JsonDict, key: str, expected: type[T], name: str) -> T:
    value = body[key]
    # bool is an int subclass in Python, not in JSON; no key here is a number.
    if not isinstance(value, expected):
        raise MatrixError("M_INVALID_PARAM", f"'{key}' must be {name}")
    return value


def _string(body: JsonDict, key: str) -> str:
    return _typed(body, key, str, "a string")


def pusher_json(pusher: PusherRow) -> JsonDict:
    """A pusher as ``GET /pushers`` shows it."""
    return {
        "app_display_name": pusher.app_display_name,
        "app_id": pusher.app_id,
        "data": pusher.data,
        "device_display_name": pusher.device_display_name,
        "kind": pusher.kind,
        "lang": pusher.lang,
        "profile_tag": pusher.profile_tag,
        "pushkey": pusher.pushkey,
    }


def _check_ids(app_id: str, pushkey: str) -> None:
    if len(app_id) > MAX_APP_ID_CHARS:
        raise MatrixError("M_INVALID_PARAM", f"'app_id' must be at most {MAX_APP_ID_CHARS} chars")
    if len(pushkey.encode()) > MAX_PUSHKEY_BYTES:
        raise MatrixError(
            "M_INVALID_PARAM", f"'pushkey' must be at most {MAX_PUSHKEY_BYTES} bytes"
        )


def _check_http_data(data: dict[str, Any]) -> None:
    if "url" not in data:
        raise MatrixError("M_MISSING_PARAM", "'url' required in data for HTTP pusher")
    url = data["url"]
    if not isinstance(url, str):
        raise MatrixError("M_INVALID_PARAM", "'url' must be a string")
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # e.g. a port that is not a number
        valid = False
    if not valid:
        raise MatrixError("M_INVALID_PARAM", "'url' must be an http or https URL")
    if parts.path != PUSH_PATH:
        raise MatrixError("M_INVALID_PARAM", f"'url' must have a path of '{PUSH_PATH}'")
    if "format" in data and not isinstance(data["format"], str):
        raise MatrixError("M_INVALID_PARAM", "'format' must be a string")


class PushersChanged(Protocol):
    """What delivers pushers: told when a user's pushers were set or deleted."""

    def pushers_changed_nowait(self, user_id: str) -> None: ...


class NoPusherDelivery:
    """`PushersChanged` of an instance that does not deliver pushers (issue 13).

    Only the pushers instance (the events writer) runs a `PusherPool` to restart; a worker
    forwards ``POST /pushers/set`` to it, so nothing here has anything to wake.
    """

    def pushers_changed_nowait(self, user_id: str) -> None:
        pass


class PushersHandler:
    """Setting, deleting and listing a user's pushers."""

    def __init__(
        self,
        store: PusherStore,
        pool: PushersChanged,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._pool = pool
        self._clock = clock

    async def pushers(self, user_id: str) -> list[JsonDict]:
        """``GET /pushers``: the user's own pushers."""
        return [pusher_json(p) for p in await self._store.user_pushers(user_id)]

    async def set_pusher(self, requester: Requester, body: JsonDict) -> None:
        """``POST /pushers/set``: create, update (same app id and pushkey) or, with
        ``kind: null``, delete one of the requester's pushers.

        Raises:
            MatrixError: 400 ``M_MISSING_PARAM`` for a missing key (or ``data.url``), 400
                ``M_INVALID_PARAM`` for a value of the wrong type or shape, a kind other
                than ``http``, or a new pusher past `MAX_PUSHERS_PER_USER`. Nothing changes
                then.
        """
        user_id = requester.user_id
        if body.get("kind", "") is None and "app_id" in body and "pushkey" in body:
            app_id = _string(body, "app_id")
            pushkey = _string(body, "pushkey")
            if await self._store.delete_pusher(app_id, pushkey, user_id):
                self._pool.pushers_changed_nowait(user_id)
            return
        new = self._parse(requester, body)
        existing = await self._store.user_pushers(user_id)
        if len(existing) >= MAX_PUSHERS_PER_USER and not any(
            (p.app_id, p.pushkey) == (new.app_id, new.pushkey) for p in existing
        ):
            raise MatrixError(
                "M_INVALID_PARAM",
                f"At most {MAX_PUSHERS_PER_USER} pushers per user; delete one first",
            )
        if not body.get("append", False):
            # Spec: without append, the same app id and pushkey of other users go.
            for other in await self._store.delete_other_users_pushers(
                new.app_id, new.pushkey, user_id
            ):
                self._pool.pushers_changed_nowait(other)
        await self._store.set_pusher(new)
        self._pool.pushers_changed_nowait(user_id)

    def _parse(self, requester: Requester, body: JsonDict) -> NewPusher:
        missing = [key for key in _REQUIRED if key not in body]
        if missing:
            raise MatrixError("M_MISSING_PARAM", f"Missing params: {', '.join(missing)}")
        kind = _string(body, "kind")
        app_id = _string(body, "app_id")
        pushkey = _string(body, "pushkey")
        data: dict[str, Any] = _typed(body, "data", dict, "an object")
        new = NewPusher(
            user_id=requester.user_id,
            device_id=requester.device_id,
            kind=kind,
            app_id=app_id,
            app_display_name=_string(body, "app_display_name"),
            device_display_name=_string(body, "device_display_name"),
            pushkey=pushkey,
            pushkey_ts=int(self._clock() * 1000),
            lang=_string(body, "lang"),
            data=data,
            profile_tag="" if body.get("profile_tag") is None else _string(body, "profile_tag"),
        )
        if "append" in body:
            _typed(body, "append", bool, "a boolean")
        _check_ids(app_id, pushkey)
        if kind != "http":
            # Email notifications need a mail server, which this server does not have.
            raise MatrixError("M_INVALID_PARAM", f"Unsupported pusher kind {kind!r}")
        _check_http_data(data)
        return new

    async def on_devices_changed(self, user_id: str) -> None:
        """Device listener: drop the pushers of the user's deleted devices."""
        if await self._store.delete_pushers_without_device(user_id):
            self._pool.pushers_changed_nowait(user_id)
