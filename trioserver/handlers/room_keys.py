"""Server-side key backups (client-server API "Server-side key backups").

Clients store their megolm session keys, encrypted with a backup key the server never sees,
so that a new device can read old messages. The server checks the shape of what it stores,
keeps the best key per session (see `trioserver.stores.room_keys`) and otherwise treats
``auth_data`` and ``session_data`` as opaque.

Errors follow one rule: a missing field is 400 ``M_MISSING_PARAM``, a field of the wrong type
or range 400 ``M_BAD_JSON``, an empty or oversize room or session id 400 ``M_INVALID_PARAM``
(as is a ``version`` in a body that is not the path's). Versions are opaque strings to
clients; here they are the decimal numbers we hand out, and anything else is an unknown version
(404), as in Synapse.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import orjson

from trioserver.errors import MatrixError
from trioserver.stores.room_keys import RoomKey

if TYPE_CHECKING:
    from trioserver.stores.room_keys import BackupVersion, KeyWriteResult, RoomKeyStore

JsonDict = dict[str, Any]

# Versions are what `create_version` hands out: a decimal number without leading zeros (the
# length bound keeps it inside SQLite's 64-bit integers).
_VERSION = re.compile(r"[1-9][0-9]{0,15}")
# Canonical JSON integers (spec "Canonical JSON"), which SQLite can also store.
_MAX_INT = 2**53 - 1
# Room ids are at most 255 bytes (spec "Room IDs"); megolm session ids are 43 characters.
_MAX_ID_LENGTH = 255
_MAX_ALGORITHM_LENGTH = 255


def parse_version(version: str) -> int:
    """A backup version from a path or query string.

    Raises:
        MatrixError: 404 ``M_NOT_FOUND`` for a string that is no version we could have made.
    """
    if _VERSION.fullmatch(version) is None:
        raise MatrixError("M_NOT_FOUND", "Unknown backup version")
    return int(version)


def _field(body: JsonDict, key: str, where: str) -> Any:
    if key not in body:
        raise MatrixError("M_MISSING_PARAM", f"Missing '{key}'{where}")
    return body[key]


def _opaque_json(value: Any, key: str, where: str = "") -> str:
    # The spec makes auth_data and session_data objects; strings are accepted too because
    # SyTest (tests/41end-to-end-keys/07-backup.pl) and early clients send them, and Synapse
    # stores either.
    if not isinstance(value, dict | str):
        raise MatrixError("M_BAD_JSON", f"'{key}'{where} must be an object")
    return orjson.dumps(value).decode()


def _check_id(value: str, what: str) -> str:
    if not value or len(value.encode()) > _MAX_ID_LENGTH:
        raise MatrixError(
            "M_INVALID_PARAM", f"{what} must be 1 to {_MAX_ID_LENGTH} bytes: {value[:64]!r}"
        )
    return value


def _count(body: JsonDict, key: str, where: str) -> int:
    value = _field(body, key, where)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise MatrixError("M_BAD_JSON", f"'{key}'{where} must be a non-negative integer")
    return value


def parse_key_data(room_id: str, session_id: str, data: Any) -> RoomKey:
    """One ``KeyBackupData`` object of an upload, checked.

    Raises:
        MatrixError: 400 for a missing field, a field of the wrong type or an id too long.
    """
    _check_id(room_id, "Room ID")
    _check_id(session_id, "Session ID")
    where = f" in session {session_id[:64]!r} of room {room_id[:64]!r}"
    if not isinstance(data, dict):
        raise MatrixError("M_BAD_JSON", f"Key data{where} must be an object")
    is_verified = _field(data, "is_verified", where)
    if not isinstance(is_verified, bool):
        raise MatrixError("M_BAD_JSON", f"'is_verified'{where} must be a boolean")
    return RoomKey(
        room_id,
        session_id,
        _count(data, "first_message_index", where),
        _count(data, "forwarded_count", where),
        is_verified,
        _opaque_json(_field(data, "session_data", where), "session_data", where),
    )


def _object(value: Any, what: str) -> JsonDict:
    if not isinstance(value, dict):
        raise MatrixError("M_BAD_JSON", f"{what} must be an object")
    return value


def parse_room_sessions(room_id: str, body: JsonDict) -> list[RoomKey]:
    """The keys of one room's ``{"sessions": {session_id: KeyBackupData}}``."""
    where = f" for room {room_id[:64]!r}"
    sessions = _object(_field(body, "sessions", where), f"'sessions'{where}")
    return [parse_key_data(room_id, sid, data) for sid, data in sessions.items()]


def parse_rooms(body: JsonDict) -> list[RoomKey]:
    """The keys of ``{"rooms": {room_id: {"sessions": {...}}}}``."""
    rooms = _object(_field(body, "rooms", ""), "'rooms'")
    keys: list[RoomKey] = []
    for room_id, room in rooms.items():
        keys += parse_room_sessions(room_id, _object(room, f"Room {room_id[:64]!r}"))
    return keys


def key_data_json(key: RoomKey) -> JsonDict:
    """A stored key as the spec's ``KeyBackupData`` (its session data is sent unparsed)."""
    return {
        "first_message_index": key.first_message_index,
        "forwarded_count": key.forwarded_count,
        "is_verified": key.is_verified,
        "session_data": orjson.Fragment(key.session_data_json),
    }


def _version_json(info: BackupVersion) -> JsonDict:
    return {
        "algorithm": info.algorithm,
        "auth_data": orjson.Fragment(info.auth_data_json),
        "count": info.count,
        "etag": str(info.etag),
        "version": str(info.version),
    }


def _algorithm(body: JsonDict) -> str:
    algorithm = _field(body, "algorithm", "")
    if not isinstance(algorithm, str) or not 0 < len(algorithm) <= _MAX_ALGORITHM_LENGTH:
        raise MatrixError("M_BAD_JSON", "'algorithm' must be a non-empty string")
    return algorithm


def _check_body_version(body: JsonDict, version: str) -> None:
    # Spec: a "version" in the body must be the one in the path. SyTest ("Can update backup
    # version") echoes it back as a JSON number, so 2 matches "2" (Synapse fails that test).
    given = body.get("version")
    if given is None:
        return
    if isinstance(given, int) and not isinstance(given, bool):
        given = str(given)
    if given != version:
        raise MatrixError("M_INVALID_PARAM", "Version in body does not match")


def _write_result(result: KeyWriteResult, version: int) -> JsonDict:
    if result.outcome == "no_such_version":
        raise MatrixError("M_NOT_FOUND", f"Unknown backup version {version}")
    if result.outcome == "not_current":
        # Spec: 403 with the current version, so that a stale client can catch up.
        raise MatrixError(
            "M_WRONG_ROOM_KEYS_VERSION",
            "Wrong backup version.",
            status=403,
            extra={"current_version": str(result.current_version)},
        )
    return {"count": result.count, "etag": str(result.etag)}


class RoomKeysHandler:
    """Backup versions and keys for the requesting user (no one reaches another's)."""

    def __init__(self, store: RoomKeyStore) -> None:
        self._store = store

    async def create_version(self, user_id: str, body: JsonDict) -> JsonDict:
        """POST /room_keys/version: a new version, which becomes the current one."""
        algorithm = _algorithm(body)
        auth_data = _opaque_json(_field(body, "auth_data", ""), "auth_data")
        version = await self._store.create_version(user_id, algorithm, auth_data)
        return {"version": str(version)}

    async def get_version(self, user_id: str, version: str | None) -> JsonDict:
        """GET /room_keys/version[/{version}]: a version's metadata (None: the current)."""
        info = await self._store.get_version(
            user_id, None if version is None else parse_version(version)
        )
        if info is None:
            raise MatrixError("M_NOT_FOUND", "No backup found")
        return _version_json(info)

    async def update_version(self, user_id: str, version: str, body: JsonDict) -> JsonDict:
        """PUT /room_keys/version/{version}: replace ``auth_data`` (the algorithm stays)."""
        number = parse_version(version)
        algorithm = _algorithm(body)
        auth_data = _opaque_json(_field(body, "auth_data", ""), "auth_data")
        _check_body_version(body, version)
        result = await self._store.update_auth_data(user_id, number, algorithm, auth_data)
        if result == "no_such_version":
            raise MatrixError("M_NOT_FOUND", "Unknown backup version")
        if result == "wrong_algorithm":
            raise MatrixError("M_INVALID_PARAM", "Algorithm does not match")
        return {}

    async def delete_version(self, user_id: str, version: str) -> JsonDict:
        """DELETE /room_keys/version/{version}: the version and its keys (spec: deleting a
        deleted version succeeds)."""
        if not await self._store.delete_version(user_id, parse_version(version)):
            raise MatrixError("M_NOT_FOUND", "Unknown backup version")
        return {}

    async def upload_keys(self, user_id: str, version: str, keys: list[RoomKey]) -> JsonDict:
        """PUT /room_keys/keys...: merge keys into the current version."""
        number = parse_version(version)
        return _write_result(await self._store.upload_keys(user_id, number, keys), number)

    async def get_keys(
        self, user_id: str, version: str, room_id: str | None, session_id: str | None
    ) -> list[RoomKey]:
        """GET /room_keys/keys...: the stored keys (of any live version, like Synapse).

        Raises:
            MatrixError: 404 for an unknown or deleted version.
        """
        number = parse_version(version)
        keys = await self._store.get_keys(user_id, number, room_id, session_id)
        if keys is None:
            raise MatrixError("M_NOT_FOUND", f"Unknown backup version {number}")
        return keys

    async def delete_keys(
        self, user_id: str, version: str, room_id: str | None, session_id: str | None
    ) -> JsonDict:
        """DELETE /room_keys/keys...: drop keys from a live version."""
        number = parse_version(version)
        result = await self._store.delete_keys(user_id, number, room_id, session_id)
        return _write_result(result, number)

    async def delete_all(self, user_id: str) -> None:
        """Forget every backup of a deactivated account (as Synapse does)."""
        await self._store.delete_all(user_id)
