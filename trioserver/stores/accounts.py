"""Users, devices and access tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


@attrs.frozen
class UserRow:
    """One account."""

    user_id: str
    password_hash: str | None
    admin: bool
    deactivated: bool
    user_type: str | None
    created_ts: int
    is_guest: bool = False


@attrs.frozen
class DeviceRow:
    """One device (a login session) of a user."""

    user_id: str
    device_id: str
    display_name: str | None
    last_seen_ts: int | None
    last_seen_ip: str | None
    last_seen_user_agent: str | None = None


@attrs.frozen
class LastSeen:
    """Where and with what a device was last seen, and when."""

    user_id: str
    device_id: str
    ip: str | None
    user_agent: str | None
    ts: int


@attrs.frozen
class TokenRow:
    """Who an access token belongs to."""

    token: str
    user_id: str
    device_id: str
    is_guest: bool = False


@attrs.frozen
class NewLogin:
    """A device to create or reuse, and the access token to issue for it."""

    user_id: str
    device_id: str
    token: str
    display_name: str | None
    ip: str | None
    now_ms: int
    user_agent: str | None = None


_USER_COLUMNS = "user_id, password_hash, admin, deactivated, user_type, created_ts, is_guest"
_DEVICE_COLUMNS = (
    "user_id, device_id, display_name, last_seen_ts, last_seen_ip, last_seen_user_agent"
)


def _user_row(row: tuple[object, ...]) -> UserRow:
    user_id, password_hash, admin, deactivated, user_type, created_ts, is_guest = row
    assert isinstance(user_id, str)
    assert isinstance(created_ts, int)
    assert password_hash is None or isinstance(password_hash, str)
    assert user_type is None or isinstance(user_type, str)
    return UserRow(
        user_id,
        password_hash,
        bool(admin),
        bool(deactivated),
        user_type,
        created_ts,
        bool(is_guest),
    )


def _device_row(row: tuple[object, ...]) -> DeviceRow:
    user_id, device_id, display_name, last_seen_ts, last_seen_ip, user_agent = row
    assert isinstance(user_id, str)
    assert isinstance(device_id, str)
    assert display_name is None or isinstance(display_name, str)
    assert last_seen_ts is None or isinstance(last_seen_ts, int)
    assert last_seen_ip is None or isinstance(last_seen_ip, str)
    assert user_agent is None or isinstance(user_agent, str)
    return DeviceRow(user_id, device_id, display_name, last_seen_ts, last_seen_ip, user_agent)


def _create_user_txn(
    txn: Txn,
    user: UserRow,
    displayname: str | None,
    login: NewLogin | None,
) -> bool:
    txn.execute(
        f"INSERT INTO users ({_USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (user_id) DO NOTHING",
        (
            user.user_id,
            user.password_hash,
            int(user.admin),
            int(user.deactivated),
            user.user_type,
            user.created_ts,
            int(user.is_guest),
        ),
    )
    if txn.rowcount == 0:
        return False
    txn.execute(
        "INSERT INTO profiles (user_id, displayname) VALUES (?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET displayname = excluded.displayname",
        (user.user_id, displayname),
    )
    if login is not None:
        _add_login_txn(txn, login)
    return True


def _add_login_txn(txn: Txn, login: NewLogin) -> list[str]:
    # Logging in again with an existing device id keeps the device (and its keys) but ends
    # the sessions it had: the spec says the old access tokens are invalidated.
    txn.execute(
        "INSERT INTO devices (user_id, device_id, display_name, last_seen_ts, last_seen_ip,"
        " last_seen_user_agent) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (user_id, device_id) DO UPDATE SET"
        " display_name = COALESCE(excluded.display_name, devices.display_name),"
        " last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip,"
        " last_seen_user_agent = excluded.last_seen_user_agent",
        (
            login.user_id,
            login.device_id,
            login.display_name,
            login.now_ms,
            login.ip,
            login.user_agent,
        ),
    )
    ended = _tokens_of_devices_txn(txn, login.user_id, [login.device_id])
    txn.execute(
        "DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?",
        (login.user_id, login.device_id),
    )
    txn.execute(
        "INSERT INTO access_tokens (token, user_id, device_id, created_ts) VALUES (?, ?, ?, ?)",
        (login.token, login.user_id, login.device_id, login.now_ms),
    )
    return ended


def _get_user_txn(txn: Txn, user_id: str) -> UserRow | None:
    row = txn.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = ?", (user_id,)
    ).fetchone()
    return None if row is None else _user_row(row)


def _get_token_txn(txn: Txn, token: str) -> TokenRow | None:
    row = txn.execute(
        "SELECT t.token, t.user_id, t.device_id, COALESCE(u.is_guest, 0) FROM access_tokens AS t"
        " LEFT JOIN users AS u ON u.user_id = t.user_id WHERE t.token = ?",
        (token,),
    ).fetchone()
    if row is None:
        return None
    return TokenRow(row[0], row[1], row[2], bool(row[3]))


def _tokens_of_devices_txn(txn: Txn, user_id: str, device_ids: list[str] | None) -> list[str]:
    if device_ids is None:
        rows = txn.execute("SELECT token FROM access_tokens WHERE user_id = ?", (user_id,))
        return [row[0] for row in rows.fetchall()]
    tokens: list[str] = []
    for device_id in device_ids:
        rows = txn.execute(
            "SELECT token FROM access_tokens WHERE user_id = ? AND device_id = ?",
            (user_id, device_id),
        )
        tokens.extend(row[0] for row in rows.fetchall())
    return tokens


def _delete_devices_txn(txn: Txn, user_id: str, device_ids: list[str] | None) -> list[str]:
    tokens = _tokens_of_devices_txn(txn, user_id, device_ids)
    if device_ids is None:
        txn.execute("DELETE FROM access_tokens WHERE user_id = ?", (user_id,))
        txn.execute("DELETE FROM devices WHERE user_id = ?", (user_id,))
    else:
        params = [(user_id, device_id) for device_id in device_ids]
        txn.executemany("DELETE FROM access_tokens WHERE user_id = ? AND device_id = ?", params)
        txn.executemany("DELETE FROM devices WHERE user_id = ? AND device_id = ?", params)
    return tokens


def _delete_other_tokens_txn(txn: Txn, user_id: str, keep_device_id: str | None) -> list[str]:
    """Delete every device of the user except `keep_device_id`; return the tokens deleted."""
    rows = txn.execute(
        "SELECT device_id FROM devices WHERE user_id = ? AND device_id IS NOT ?",
        (user_id, keep_device_id),
    ).fetchall()
    return _delete_devices_txn(txn, user_id, [row[0] for row in rows])


def _set_password_txn(txn: Txn, user_id: str, password_hash: str) -> None:
    txn.execute("UPDATE users SET password_hash = ? WHERE user_id = ?", (password_hash, user_id))


def _deactivate_txn(txn: Txn, user_id: str) -> list[str]:
    txn.execute(
        "UPDATE users SET deactivated = 1, password_hash = NULL WHERE user_id = ?", (user_id,)
    )
    return _delete_devices_txn(txn, user_id, None)


def _update_device_txn(txn: Txn, user_id: str, device_id: str, display_name: str) -> bool:
    txn.execute(
        "UPDATE devices SET display_name = ? WHERE user_id = ? AND device_id = ?",
        (display_name, user_id, device_id),
    )
    return txn.rowcount > 0


def _update_last_seen_txn(txn: Txn, rows: list[LastSeen]) -> None:
    # An UPDATE, not an upsert: a device deleted since the request stays deleted.
    txn.executemany(
        "UPDATE devices SET last_seen_ip = ?, last_seen_user_agent = ?, last_seen_ts = ?"
        " WHERE user_id = ? AND device_id = ? AND COALESCE(last_seen_ts, 0) <= ?",
        [(r.ip, r.user_agent, r.ts, r.user_id, r.device_id, r.ts) for r in rows],
    )


def _get_devices_txn(txn: Txn, user_id: str) -> list[DeviceRow]:
    rows = txn.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? ORDER BY device_id",
        (user_id,),
    ).fetchall()
    return [_device_row(row) for row in rows]


def _get_device_txn(txn: Txn, user_id: str, device_id: str) -> DeviceRow | None:
    row = txn.execute(
        f"SELECT {_DEVICE_COLUMNS} FROM devices WHERE user_id = ? AND device_id = ?",
        (user_id, device_id),
    ).fetchone()
    return None if row is None else _device_row(row)


def _count_users_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COUNT(*) FROM users").fetchone()
    assert row is not None
    return int(row[0])


def _next_numeric_localpart_txn(txn: Txn, server_name: str) -> int:
    # Generated localparts are numbers, like Synapse's; find the largest used so far.
    suffix = f":{server_name}"
    # SQLite's CAST reads the leading digits of any text; PostgreSQL's refuses non-numbers, so
    # there only all-digit localparts (of at most 18 digits: a BIGINT) are looked at.
    numeric = "user_id GLOB '@[0-9]*'" if txn.dialect == "sqlite" else "user_id ~ '^@[0-9]{1,18}:'"
    row = txn.execute(
        "SELECT MAX(CAST(substr(user_id, 2, length(user_id) - ?) AS BIGINT)) FROM users"
        f" WHERE {numeric} AND user_id LIKE ?",
        (len(suffix) + 1, "%" + suffix),
    ).fetchone()
    return int(row[0] or 0) + 1 if row is not None else 1


def _create_numbered_user_txn(
    txn: Txn,
    server_name: str,
    user: UserRow,
    displayname: str | None,
    login: NewLogin | None,
) -> str:
    # The number is chosen in the write transaction that creates the user, so concurrent
    # registrations cannot pick the same one.
    localpart = str(_next_numeric_localpart_txn(txn, server_name))
    user_id = f"@{localpart}:{server_name}"
    created = _create_user_txn(
        txn,
        attrs.evolve(user, user_id=user_id),
        displayname if displayname is not None else localpart,
        None if login is None else attrs.evolve(login, user_id=user_id),
    )
    assert created, f"{user_id} was the next free numeric user id but exists"
    return user_id


def _upgrade_guest_txn(
    txn: Txn, user_id: str, password_hash: str | None, login: NewLogin | None
) -> list[str] | None:
    # Spec "Guest Access": the guest keeps its user id and becomes a full account.
    txn.execute(
        "UPDATE users SET is_guest = 0, password_hash = ? WHERE user_id = ? AND is_guest = 1",
        (password_hash, user_id),
    )
    if txn.rowcount == 0:
        return None
    tokens = _tokens_of_devices_txn(txn, user_id, None)
    if login is not None:
        _add_login_txn(txn, login)
    return tokens


class AccountStore:
    """Users, devices and access tokens."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_user(
        self, user: UserRow, *, displayname: str | None, login: NewLogin | None = None
    ) -> bool:
        """Create a user (with its profile, and a first device/token when `login` is given).

        Returns:
            False when the user id is taken (nothing is written then).

        Checkpoint: yes.
        """
        return await self._db.run_txn("create_user", _create_user_txn, user, displayname, login)

    async def add_login(self, login: NewLogin) -> list[str]:
        """Create or reuse a device and issue an access token for it.

        Returns:
            The device's earlier access tokens, which stopped working. Checkpoint: yes.
        """
        return await self._db.run_txn("add_login", _add_login_txn, login)

    async def get_user(self, user_id: str) -> UserRow | None:
        """The user's account row, or None. Checkpoint: yes."""
        return await self._db.run_read_inline("get_user", _get_user_txn, user_id)

    async def get_token(self, token: str) -> TokenRow | None:
        """Who `token` belongs to, or None when it is unknown. Checkpoint: yes."""
        return await self._db.run_read_inline("get_token", _get_token_txn, token)

    async def delete_devices(self, user_id: str, device_ids: list[str] | None) -> list[str]:
        """Delete devices (all of the user's when None) and their tokens.

        Returns:
            The access tokens that stopped working. Checkpoint: yes.
        """
        return await self._db.run_txn("delete_devices", _delete_devices_txn, user_id, device_ids)

    async def delete_other_devices(self, user_id: str, keep_device_id: str | None) -> list[str]:
        """Delete every device of the user but one; return the tokens ended. Checkpoint: yes."""
        return await self._db.run_txn(
            "delete_other_devices", _delete_other_tokens_txn, user_id, keep_device_id
        )

    async def set_password_hash(self, user_id: str, password_hash: str) -> None:
        """Replace the user's password hash. Checkpoint: yes."""
        await self._db.run_txn("set_password", _set_password_txn, user_id, password_hash)

    async def deactivate(self, user_id: str) -> list[str]:
        """Mark the user deactivated and delete all devices; return the tokens ended.

        Checkpoint: yes.
        """
        return await self._db.run_txn("deactivate_user", _deactivate_txn, user_id)

    async def get_devices(self, user_id: str) -> list[DeviceRow]:
        """All of the user's devices. Checkpoint: yes."""
        return await self._db.run_read_inline("get_devices", _get_devices_txn, user_id)

    async def get_device(self, user_id: str, device_id: str) -> DeviceRow | None:
        """One device, or None. Checkpoint: yes."""
        return await self._db.run_read_inline("get_device", _get_device_txn, user_id, device_id)

    async def update_device(self, user_id: str, device_id: str, display_name: str) -> bool:
        """Rename a device; False when it does not exist. Checkpoint: yes."""
        return await self._db.run_txn(
            "update_device", _update_device_txn, user_id, device_id, display_name
        )

    async def update_last_seen(self, rows: list[LastSeen]) -> None:
        """Record where devices were last seen (devices that no longer exist are skipped,
        and a row never moves a device's time backwards).

        Checkpoint: yes.
        """
        await self._db.run_txn("update_last_seen", _update_last_seen_txn, rows)

    async def count_users(self) -> int:
        """How many accounts exist. Checkpoint: yes."""
        return await self._db.run_read("count_users", _count_users_txn)

    async def create_numbered_user(
        self,
        server_name: str,
        user: UserRow,
        *,
        displayname: str | None,
        login: NewLogin | None = None,
    ) -> str:
        """Create a user whose localpart is the next free number (no username was asked for).

        The user ids in `user` and `login` are ignored: the new id is chosen in the same
        transaction, so concurrent calls get distinct ids. `displayname` defaults to the
        localpart.

        Returns:
            The new user id. Checkpoint: yes.
        """
        return await self._db.run_txn(
            "create_numbered_user",
            _create_numbered_user_txn,
            server_name,
            user,
            displayname,
            login,
        )

    async def upgrade_guest(
        self, user_id: str, password_hash: str | None, login: NewLogin | None
    ) -> list[str] | None:
        """Turn a guest account into a full one (with a password and a new login).

        Returns:
            The user's access tokens from before (their cached guest flag is stale), or None
            when the user is not a guest (nothing is written then). Checkpoint: yes.
        """
        return await self._db.run_txn(
            "upgrade_guest", _upgrade_guest_txn, user_id, password_hash, login
        )
