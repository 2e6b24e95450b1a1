"""Server-side key backups over real HTTP (client-server API "Server-side key backups").

Mirrors every check of SyTest tests/41end-to-end-keys/07-backup.pl (named in each test's
docstring) and adds the bad input, authorization and merge-rule cases.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.guest_helpers import GUEST_REGISTRATION, register_guest
from tests.integration.server_db import server_db

if TYPE_CHECKING:
    from trioserver.testing import InProcessServer

ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
AUTH_DATA = {"public_key": "abcdefg", "signatures": {"@alice:test": {"ed25519:DEV": "sig"}}}
ROOM = "!room:test"
SESSION = "c0ff33"


def key(
    index: int = 3, forwarded: int = 0, verified: bool = False, data: Any = None
) -> dict[str, Any]:
    """A KeyBackupData object."""
    return {
        "first_message_index": index,
        "forwarded_count": forwarded,
        "is_verified": verified,
        "session_data": {"ciphertext": "c", "mac": "m"} if data is None else data,
    }


def keys_path(room: str | None = None, session: str | None = None) -> str:
    path = "/room_keys/keys"
    if room is not None:
        path += "/" + quote(room, safe="")
    if session is not None:
        path += "/" + quote(session, safe="")
    return path


async def create(client: Client, auth_data: Any = None) -> str:
    body = {"algorithm": ALGORITHM, "auth_data": AUTH_DATA if auth_data is None else auth_data}
    version = assert_ok(await client.post("/room_keys/version", body))["version"]
    assert isinstance(version, str)
    return version


async def put_key(
    client: Client, version: str, data: Any, room: str = ROOM, session: str = SESSION
) -> httpx.Response:
    return await client.put(keys_path(room, session), data, params={"version": version})


async def get_keys(
    client: Client, version: str, room: str | None = None, session: str | None = None
) -> httpx.Response:
    return await client.get(keys_path(room, session), params={"version": version})


async def version_info(client: Client, version: str | None = None) -> dict[str, Any]:
    path = "/room_keys/version" + ("" if version is None else f"/{version}")
    return assert_ok(await client.get(path))


async def test_no_backup_is_not_found(alice: Client) -> None:
    """Element probes GET /room_keys/version at every start: a clean 404 when there is none."""
    body = assert_error(await alice.get("/room_keys/version"), 404, "M_NOT_FOUND")
    assert body["error"] == "No backup found"
    assert_error(await alice.get("/room_keys/version/1"), 404, "M_NOT_FOUND")
    assert_error(await get_keys(alice, "1"), 404, "M_NOT_FOUND")
    assert_error(await put_key(alice, "1", key()), 404, "M_NOT_FOUND")
    assert_error(await alice.delete(keys_path(), params={"version": "1"}), 404, "M_NOT_FOUND")
    assert_error(await alice.delete("/room_keys/version/1"), 404, "M_NOT_FOUND")


async def test_create_and_get_a_version(alice: Client, http: httpx.AsyncClient) -> None:
    """SyTest "Can create backup version"."""
    version = await create(alice)
    assert version == "1"
    expected = {
        "algorithm": ALGORITHM,
        "auth_data": AUTH_DATA,
        "count": 0,
        "etag": "0",
        "version": "1",
    }
    assert await version_info(alice) == expected
    assert await version_info(alice, version) == expected
    # The r0 prefix works too (older clients).
    r0 = await http.get("/_matrix/client/r0/room_keys/version", headers=alice.headers)
    assert assert_ok(r0) == expected
    # SyTest sends an opaque string as auth_data; it comes back unchanged.
    body = {"algorithm": "m.megolm_backup.v1", "auth_data": "anopaquestring"}
    second = assert_ok(await alice.post("/room_keys/version", body))["version"]
    info = await version_info(alice)
    assert (info["version"], info["algorithm"], info["auth_data"]) == (
        second,
        "m.megolm_backup.v1",
        "anopaquestring",
    )


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"auth_data": AUTH_DATA}, "M_MISSING_PARAM"),
        ({"algorithm": ALGORITHM}, "M_MISSING_PARAM"),
        ({"algorithm": 5, "auth_data": AUTH_DATA}, "M_BAD_JSON"),
        ({"algorithm": "", "auth_data": AUTH_DATA}, "M_BAD_JSON"),
        ({"algorithm": "x" * 300, "auth_data": AUTH_DATA}, "M_BAD_JSON"),
        ({"algorithm": ALGORITHM, "auth_data": 7}, "M_BAD_JSON"),
        ({"algorithm": ALGORITHM, "auth_data": None}, "M_BAD_JSON"),
        ({"algorithm": ALGORITHM, "auth_data": ["a"]}, "M_BAD_JSON"),
        (["not", "an", "object"], "M_BAD_JSON"),
    ],
)
async def test_create_rejects_bad_bodies(alice: Client, body: Any, errcode: str) -> None:
    assert_error(await alice.post("/room_keys/version", body), 400, errcode)
    assert_error(await alice.get("/room_keys/version"), 404, "M_NOT_FOUND")


async def test_create_rejects_a_body_that_is_not_json(alice: Client) -> None:
    response = await alice.http.post(
        "/_matrix/client/v3/room_keys/version", content=b"{nope", headers=alice.headers
    )
    assert_error(response, 400, "M_NOT_JSON")
    assert_error(await alice.get("/room_keys/version"), 404, "M_NOT_FOUND")


async def test_update_a_version(alice: Client) -> None:
    """SyTest "Can update backup version", and the spec's 400s and 404s."""
    version = await create(alice)
    new_auth = {"public_key": "other", "signatures": {}}
    body = {"algorithm": ALGORITHM, "auth_data": new_auth, "version": version}
    assert assert_ok(await alice.put(f"/room_keys/version/{version}", body)) == {}
    info = await version_info(alice, version)
    assert (info["auth_data"], info["algorithm"], info["version"]) == (new_auth, ALGORITHM, "1")
    # Without "version" in the body.
    string_auth = {"algorithm": ALGORITHM, "auth_data": "adifferentopaquestring"}
    assert_ok(await alice.put(f"/room_keys/version/{version}", string_auth))
    assert (await version_info(alice))["auth_data"] == "adifferentopaquestring"
    # SyTest echoes the version back as a number.
    numeric = {"algorithm": ALGORITHM, "auth_data": {"n": 1}, "version": int(version)}
    assert_ok(await alice.put(f"/room_keys/version/{version}", numeric))
    assert_ok(await alice.put(f"/room_keys/version/{version}", string_auth))
    bad = [
        ({**string_auth, "version": "2"}, 400, "M_INVALID_PARAM"),
        ({**string_auth, "version": 2}, 400, "M_INVALID_PARAM"),
        ({**string_auth, "version": True}, 400, "M_INVALID_PARAM"),
        ({**string_auth, "version": ["1"]}, 400, "M_INVALID_PARAM"),
        ({"algorithm": "m.other", "auth_data": {}}, 400, "M_INVALID_PARAM"),
        ({"algorithm": ALGORITHM}, 400, "M_MISSING_PARAM"),
        ({"auth_data": {}}, 400, "M_MISSING_PARAM"),
        ({"algorithm": ALGORITHM, "auth_data": 1}, 400, "M_BAD_JSON"),
    ]
    for bad_body, status, errcode in bad:
        response = await alice.put(f"/room_keys/version/{version}", bad_body)
        assert_error(response, status, errcode)
    for unknown in ("2", "bogus", "01", "99999999999999999999999"):
        response = await alice.put(f"/room_keys/version/{unknown}", string_auth)
        assert_error(response, 404, "M_NOT_FOUND")
    assert (await version_info(alice))["auth_data"] == "adifferentopaquestring"


async def test_versions_are_numbered_per_user_and_never_reused(alice: Client, bob: Client) -> None:
    """SyTest "Can create more than 10 backup versions" (Synapse #4169)."""
    versions = [await create(alice) for _ in range(11)]
    assert versions == [str(n) for n in range(1, 12)]
    assert (await version_info(alice))["version"] == "11"
    assert_ok(await alice.delete("/room_keys/version/11"))
    assert await create(alice) == "12"
    # Bob's numbers are his own.
    assert await create(bob) == "1"


async def test_delete_a_version(alice: Client) -> None:
    """SyTest "Can delete backup"."""
    first = await create(alice)
    second = await create(alice)
    assert_ok(await put_key(alice, second, key()))
    assert assert_ok(await alice.delete(f"/room_keys/version/{second}")) == {}
    assert (await version_info(alice))["version"] == first
    assert_error(await alice.get(f"/room_keys/version/{second}"), 404, "M_NOT_FOUND")
    # Spec: deleting a deleted backup succeeds; one that never existed is 404.
    assert_ok(await alice.delete(f"/room_keys/version/{second}"))
    assert_error(await alice.delete("/room_keys/version/7"), 404, "M_NOT_FOUND")
    assert_error(await alice.delete("/room_keys/version/bogus"), 404, "M_NOT_FOUND")
    # Its keys are gone with it, and it takes no more.
    assert_error(await get_keys(alice, second), 404, "M_NOT_FOUND")
    assert_error(await put_key(alice, second, key()), 404, "M_NOT_FOUND")
    response = await alice.put(
        f"/room_keys/version/{second}", {"algorithm": ALGORITHM, "auth_data": {}}
    )
    assert_error(response, 404, "M_NOT_FOUND")
    # The older version is current again and takes uploads.
    assert assert_ok(await put_key(alice, first, key()))["count"] == 1
    assert_ok(await alice.delete(f"/room_keys/version/{first}"))
    assert_error(await alice.get("/room_keys/version"), 404, "M_NOT_FOUND")


async def test_deleted_and_recreated_backups_are_empty(alice: Client) -> None:
    """SyTest "Deleted & recreated backups are empty"."""
    version = await create(alice)
    assert_ok(await put_key(alice, version, key(data="areallyopaquestring")))
    assert_ok(await alice.delete(f"/room_keys/version/{version}"))
    again = await create(alice)
    assert assert_ok(await get_keys(alice, again)) == {"rooms": {}}
    assert (await version_info(alice, again))["count"] == 0


async def test_an_empty_backup(alice: Client) -> None:
    """SyTest "Responds correctly when backup is empty"."""
    version = await create(alice)
    response = await get_keys(alice, version, "!notaroom", "notassession")
    assert_error(response, 404, "M_NOT_FOUND")
    assert assert_ok(await get_keys(alice, version, "!notaroom")) == {"sessions": {}}
    assert assert_ok(await get_keys(alice, version)) == {"rooms": {}}
    assert_error(await get_keys(alice, "bogusversion"), 404, "M_NOT_FOUND")
    assert_error(await get_keys(alice, "2"), 404, "M_NOT_FOUND")


async def test_back_up_and_read_keys_at_every_level(alice: Client) -> None:
    """SyTest "Can backup keys", through the session, room and all-rooms paths."""
    version = await create(alice)
    sytest_key = key(3, 0, False, "anopaquestring")
    stored = assert_ok(await put_key(alice, version, sytest_key, "!abcd", "1234"))
    assert stored == {"count": 1, "etag": "1"}
    assert assert_ok(await get_keys(alice, version, "!abcd", "1234")) == sytest_key
    room_body = {"sessions": {"s1": key(1), "s2": key(2, verified=True)}}
    put_room = await alice.put(keys_path(ROOM), room_body, params={"version": version})
    assert assert_ok(put_room) == {"count": 3, "etag": "2"}
    all_body = {"rooms": {"!other:test": {"sessions": {"s3": key(5)}}, ROOM: {"sessions": {}}}}
    put_all = await alice.put(keys_path(), all_body, params={"version": version})
    assert assert_ok(put_all) == {"count": 4, "etag": "3"}
    assert assert_ok(await get_keys(alice, version, ROOM)) == room_body
    assert assert_ok(await get_keys(alice, version)) == {
        "rooms": {
            "!abcd": {"sessions": {"1234": sytest_key}},
            ROOM: room_body,
            "!other:test": {"sessions": {"s3": key(5)}},
        }
    }
    info = await version_info(alice)
    assert (info["count"], info["etag"]) == (4, "3")
    # An empty upload changes nothing.
    empty = await alice.put(keys_path(), {"rooms": {}}, params={"version": version})
    assert assert_ok(empty) == {"count": 4, "etag": "3"}


async def test_ids_with_reserved_characters(alice: Client) -> None:
    version = await create(alice)
    room, session = "!a/b?c#d:example.org", "sess/ion+/=="
    assert_ok(await put_key(alice, version, key(), room, session))
    assert assert_ok(await get_keys(alice, version, room, session)) == key()
    assert list(assert_ok(await get_keys(alice, version))["rooms"]) == [room]


async def test_better_keys_replace_worse_ones(alice: Client) -> None:
    """SyTest "Can update keys with better versions" and "Will not update keys with worse
    versions", and each tie-breaker of the spec's rule: verified wins, then the lower
    first_message_index, then the lower forwarded_count; a key no better is ignored."""
    version = await create(alice)
    steps: list[tuple[dict[str, Any], bool]] = [
        (key(3, 2, False, "first"), True),
        (key(4, 0, False, "later index"), False),
        (key(3, 2, False, "same"), False),
        (key(3, 3, False, "more forwards"), False),
        (key(3, 1, False, "fewer forwards"), True),
        (key(2, 9, False, "lower index, more forwards"), True),
        (key(10, 10, True, "verified"), True),
        (key(0, 0, False, "unverified, lower index"), False),
        (key(11, 0, True, "verified, later index"), False),
        (key(9, 11, True, "verified, lower index"), True),
        (key(9, 10, True, "verified, fewer forwards"), True),
    ]
    current, etag = steps[0][0], 0
    for data, replaces in steps:
        result = assert_ok(await put_key(alice, version, data))
        if replaces:
            current, etag = data, etag + 1
        assert result == {"count": 1, "etag": str(etag)}, data["session_data"]
        assert assert_ok(await get_keys(alice, version, ROOM, SESSION)) == current


async def test_an_upload_merges_each_session_on_its_own(alice: Client) -> None:
    version = await create(alice)
    body = {"sessions": {"a": key(5), "b": key(5)}}
    assert_ok(await alice.put(keys_path(ROOM), body, params={"version": version}))
    body = {"sessions": {"a": key(1, data="better"), "b": key(9, data="worse"), "c": key(0)}}
    result = assert_ok(await alice.put(keys_path(ROOM), body, params={"version": version}))
    assert result == {"count": 3, "etag": "2"}
    sessions = assert_ok(await get_keys(alice, version, ROOM))["sessions"]
    assert sessions == {"a": key(1, data="better"), "b": key(5), "c": key(0)}


async def test_deleting_keys_keeps_count_and_etag_right(alice: Client) -> None:
    version = await create(alice)
    body = {
        "rooms": {
            "!r1:test": {"sessions": {"a": key(), "b": key()}},
            "!r2:test": {"sessions": {"c": key()}},
            "!r3:test": {"sessions": {"d": key(), "e": key()}},
        }
    }
    assert assert_ok(await alice.put(keys_path(), body, params={"version": version}))["count"] == 5
    params = {"version": version}
    result = assert_ok(await alice.delete(keys_path("!r1:test", "a"), params=params))
    assert result == {"count": 4, "etag": "2"}
    # Deleting what is not there changes nothing.
    result = assert_ok(await alice.delete(keys_path("!r1:test", "zz"), params=params))
    assert result == {"count": 4, "etag": "2"}
    result = assert_ok(await alice.delete(keys_path("!nothing:test"), params=params))
    assert result == {"count": 4, "etag": "2"}
    result = assert_ok(await alice.delete(keys_path("!r3:test"), params=params))
    assert result == {"count": 2, "etag": "3"}
    assert assert_ok(await get_keys(alice, version, "!r3:test")) == {"sessions": {}}
    assert_error(await get_keys(alice, version, "!r1:test", "a"), 404, "M_NOT_FOUND")
    info = await version_info(alice)
    assert (info["count"], info["etag"]) == (2, "3")
    result = assert_ok(await alice.delete(keys_path(), params=params))
    assert result == {"count": 0, "etag": "4"}
    assert assert_ok(await get_keys(alice, version)) == {"rooms": {}}
    # A deleted key can be uploaded again.
    assert assert_ok(await put_key(alice, version, key())) == {"count": 1, "etag": "5"}


async def test_uploads_go_only_to_the_current_version(alice: Client) -> None:
    """SyTest "Will not back up to an old backup version": 403 with the current version."""
    old = await create(alice)
    assert_ok(await put_key(alice, old, key(5, data="old")))
    new = await create(alice)
    for path, body in [
        (keys_path(ROOM, SESSION), key(0)),
        (keys_path(ROOM), {"sessions": {SESSION: key(0)}}),
        (keys_path(), {"rooms": {ROOM: {"sessions": {"x": key(0)}}}}),
    ]:
        response = await alice.put(path, body, params={"version": old})
        error = assert_error(response, 403, "M_WRONG_ROOM_KEYS_VERSION")
        assert error["current_version"] == new
    # Nothing changed in the old version, which can still be read and emptied (Synapse).
    assert assert_ok(await get_keys(alice, old, ROOM, SESSION)) == key(5, data="old")
    info = await version_info(alice, old)
    assert (info["count"], info["etag"]) == (1, "1")
    assert (await version_info(alice, new))["count"] == 0
    result = assert_ok(await alice.delete(keys_path(), params={"version": old}))
    assert result == {"count": 0, "etag": "2"}
    # An unknown version is 404, not 403.
    assert_error(await put_key(alice, "9", key()), 404, "M_NOT_FOUND")


BAD_KEYS: list[tuple[Any, str]] = [
    ({k: v for k, v in key().items() if k != "first_message_index"}, "M_MISSING_PARAM"),
    ({k: v for k, v in key().items() if k != "forwarded_count"}, "M_MISSING_PARAM"),
    ({k: v for k, v in key().items() if k != "is_verified"}, "M_MISSING_PARAM"),
    ({k: v for k, v in key().items() if k != "session_data"}, "M_MISSING_PARAM"),
    ({**key(), "first_message_index": -1}, "M_BAD_JSON"),
    ({**key(), "first_message_index": "3"}, "M_BAD_JSON"),
    ({**key(), "first_message_index": 1.5}, "M_BAD_JSON"),
    ({**key(), "first_message_index": True}, "M_BAD_JSON"),
    ({**key(), "first_message_index": 2**60}, "M_BAD_JSON"),
    ({**key(), "forwarded_count": -1}, "M_BAD_JSON"),
    ({**key(), "forwarded_count": None}, "M_BAD_JSON"),
    ({**key(), "is_verified": "false"}, "M_BAD_JSON"),
    ({**key(), "is_verified": 0}, "M_BAD_JSON"),
    ({**key(), "session_data": 5}, "M_BAD_JSON"),
    ({**key(), "session_data": None}, "M_BAD_JSON"),
    ({**key(), "session_data": ["a"]}, "M_BAD_JSON"),
    ([key()], "M_BAD_JSON"),
]


@pytest.mark.parametrize(("data", "errcode"), BAD_KEYS)
async def test_bad_key_data_is_rejected_at_every_level(
    alice: Client, data: Any, errcode: str
) -> None:
    version = await create(alice)
    params = {"version": version}
    session_level = await alice.put(keys_path(ROOM, SESSION), data, params=params)
    assert_error(session_level, 400, errcode)
    # One bad key spoils the whole upload: nothing is stored.
    room_level = {"sessions": {"good": key(), SESSION: data}}
    assert_error(await alice.put(keys_path(ROOM), room_level, params=params), 400, errcode)
    all_level = {"rooms": {"!good:test": {"sessions": {"good": key()}}, ROOM: room_level}}
    assert_error(await alice.put(keys_path(), all_level, params=params), 400, errcode)
    assert assert_ok(await get_keys(alice, version)) == {"rooms": {}}
    assert (await version_info(alice))["etag"] == "0"


@pytest.mark.parametrize(
    ("path", "body", "errcode"),
    [
        (keys_path(ROOM), {}, "M_MISSING_PARAM"),
        (keys_path(ROOM), {"sessions": []}, "M_BAD_JSON"),
        (keys_path(ROOM), {"sessions": "x"}, "M_BAD_JSON"),
        (keys_path(), {}, "M_MISSING_PARAM"),
        (keys_path(), {"rooms": [1]}, "M_BAD_JSON"),
        (keys_path(), {"rooms": {ROOM: []}}, "M_BAD_JSON"),
        (keys_path(), {"rooms": {ROOM: {}}}, "M_MISSING_PARAM"),
        (keys_path(), {"rooms": {ROOM: {"sessions": {SESSION: 1}}}}, "M_BAD_JSON"),
        (keys_path(), {"rooms": {"!" + "x" * 300: {"sessions": {"s": key()}}}}, "M_INVALID_PARAM"),
        (keys_path(ROOM, "s" * 300), key(), "M_INVALID_PARAM"),
        (keys_path(ROOM), {"sessions": {"": key()}}, "M_INVALID_PARAM"),
    ],
)
async def test_bad_upload_bodies_are_rejected(
    alice: Client, path: str, body: Any, errcode: str
) -> None:
    version = await create(alice)
    assert_error(await alice.put(path, body, params={"version": version}), 400, errcode)
    assert assert_ok(await get_keys(alice, version)) == {"rooms": {}}


async def test_the_version_parameter_is_required(alice: Client) -> None:
    version = await create(alice)
    for path in (keys_path(), keys_path(ROOM), keys_path(ROOM, SESSION)):
        assert_error(await alice.get(path), 400, "M_MISSING_PARAM")
        assert_error(await alice.delete(path), 400, "M_MISSING_PARAM")
    assert_error(await alice.put(keys_path(ROOM, SESSION), key()), 400, "M_MISSING_PARAM")
    for bogus in ("", "bogus", "-1", "0", "1.0", " 1"):
        response = await put_key(alice, bogus, key())
        assert_error(response, 404, "M_NOT_FOUND")
    assert (await version_info(alice, version))["count"] == 0


async def test_another_users_backup_is_unreachable(alice: Client, bob: Client) -> None:
    version = await create(alice)
    assert_ok(await put_key(alice, version, key(data="secret")))
    assert_error(await bob.get("/room_keys/version"), 404, "M_NOT_FOUND")
    assert_error(await bob.get(f"/room_keys/version/{version}"), 404, "M_NOT_FOUND")
    assert_error(await get_keys(bob, version), 404, "M_NOT_FOUND")
    assert_error(await get_keys(bob, version, ROOM, SESSION), 404, "M_NOT_FOUND")
    assert_error(await put_key(bob, version, key(0, data="evil")), 404, "M_NOT_FOUND")
    assert_error(await bob.delete(keys_path(), params={"version": version}), 404, "M_NOT_FOUND")
    assert_error(await bob.delete(f"/room_keys/version/{version}"), 404, "M_NOT_FOUND")
    update = {"algorithm": ALGORITHM, "auth_data": {"evil": True}}
    assert_error(await bob.put(f"/room_keys/version/{version}", update), 404, "M_NOT_FOUND")
    # Bob's own backup has the same number but is another backup.
    assert await create(bob) == version
    assert_ok(await put_key(bob, version, key(0, data="bob's")))
    assert assert_ok(await get_keys(alice, version, ROOM, SESSION)) == key(data="secret")
    assert (await version_info(alice))["auth_data"] == AUTH_DATA
    assert assert_ok(await get_keys(bob, version, ROOM, SESSION)) == key(0, data="bob's")


async def test_key_backup_needs_a_full_account(http: httpx.AsyncClient) -> None:
    response = await http.get("/_matrix/client/v3/room_keys/version")
    assert_error(response, 401, "M_MISSING_TOKEN")
    async with (
        serve_in_process(registration=GUEST_REGISTRATION) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as guest_http,
    ):
        guest = await register_guest(guest_http)
        body = {"algorithm": ALGORITHM, "auth_data": AUTH_DATA}
        response = await guest.post("/room_keys/version", body)
        assert_error(response, 403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_a_large_upload(alice: Client) -> None:
    """Element uploads keys in batches of a few hundred and restores the whole backup."""
    version = await create(alice)
    body = {
        "rooms": {
            f"!room{r}:test": {"sessions": {f"session{r}-{s}": key(s) for s in range(100)}}
            for r in range(10)
        }
    }
    params = {"version": version}
    started = time.monotonic()
    result = assert_ok(await alice.put(keys_path(), body, params=params))
    assert result == {"count": 1000, "etag": "1"}
    # The same keys again are no better: nothing changes.
    assert assert_ok(await alice.put(keys_path(), body, params=params)) == result
    assert assert_ok(await get_keys(alice, version)) == body
    # Generous even on a loaded 2-core machine; a per-key round trip would blow it.
    assert time.monotonic() - started < 20
    assert (await version_info(alice))["count"] == 1000


async def test_deactivation_deletes_the_backups(
    hs: InProcessServer, http: httpx.AsyncClient
) -> None:
    await hs.register_user("dora", "dorapw")
    dora = await Client.login(http, "dora", "dorapw")
    await hs.register_user("eve", "evepw")
    eve = await Client.login(http, "eve", "evepw")
    for client in (dora, eve):
        version = await create(client)
        assert_ok(await put_key(client, version, key()))
    assert_ok(await dora.with_password_uia("POST", "/account/deactivate", {}, "dorapw"))
    with server_db(hs.config) as db:
        for table in ("room_key_versions", "room_keys"):
            rows = db.rows(f"SELECT user_id FROM {table}")
            assert rows == [(eve.user_id,)], table
    assert (await version_info(eve))["count"] == 1
