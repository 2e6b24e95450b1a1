"""End-to-end encryption keys and device-list changes.

Theory of operation
-------------------
This handler is the writer of the device_lists stream. Every change a client must hear of
to keep its copy of someone's device list current (client-server API, "Tracking the device
list for a user") writes a device_lists row in the same transaction as the change itself:
device keys uploaded (`upload_keys`), cross-signing keys and signatures (`cross_signing`), and
devices created, renamed or deleted (`on_devices_changed`, called by the accounts handler,
which also drops the keys of deleted devices). After the commit, the user and everyone
sharing a room with them are woken (`Notifier.notify`).

Readers (``/sync``, ``/keys/changes``) ask which users changed between two positions
(`changed_since`) and whom the user started or stopped sharing rooms with
(`device_list_changes`). Keys of remote users need federation: queries and claims for them
report the server in ``failures``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError
from trioserver.events import is_valid_user_id
from trioserver.handlers.cross_signing import CrossSigningHandler
from trioserver.handlers.e2e_validation import check_device_keys, check_key_map
from trioserver.stores.cross_signing import CrossSigningStore
from trioserver.stores.device_lists import DeviceListStore
from trioserver.stores.e2e_keys import (
    E2eKeyStore,
    KeyUpload,
    OneTimeKeyConflictError,
    UploadedKey,
)
from trioserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from trioserver.handlers.auth import Requester
    from trioserver.handlers.notifier import Notifier
    from trioserver.stores.cross_signing import ChangeRecord
    from trioserver.stores.database import Database
    from trioserver.stores.state import StateStore
    from trioserver.stores.stream_updates import DeviceListStreamRow
    from trioserver.streams import StreamPositions, StreamToken

JsonDict = dict[str, Any]
# What /keys/query and /keys/claim report for servers we cannot reach (no federation yet).
FEDERATION_FAILURE: JsonDict = {"status": 503, "message": "Federation is not supported yet"}


@attrs.frozen
class DeviceListChanges:
    """The ``device_lists`` section of /sync, and the answer of ``/keys/changes``.

    Attributes:
        changed: users whose devices or keys changed, or who newly share a room with the user.
        left: users who no longer share any room with the user.
    """

    changed: frozenset[str]
    left: frozenset[str]


class E2eKeysHandler:
    """End-to-end encryption keys and device-list changes."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
        clock: Callable[[], float] = time.time,
        writer: bool = True,
    ) -> None:
        # False on a worker (issue 13): positions come from replication (`on_replicated`).
        self._writer = writer
        self._notifier = notifier
        self._positions = positions
        self._server_name = server_name
        self._clock = clock
        self._keys = E2eKeyStore(db)
        self._lists = DeviceListStore(db)
        self._cross_signing_keys = CrossSigningStore(db)
        self._ids: StreamIdGenerator | None = None
        self.cross_signing = CrossSigningHandler(
            self._keys, self._cross_signing_keys, self._generator, self._announce
        )

    async def load(self) -> None:
        """Read the stream position and register the device_lists stream. Checkpoint: yes."""
        self._ids = StreamIdGenerator(await self._lists.max_stream_id(), writer=self._writer)
        self._positions.register("device_lists", self.position)

    def position(self) -> int:
        """The current position of the device_lists stream."""
        assert self._ids is not None, "E2eKeysHandler.load() was not run"
        return self._ids.current

    def _generator(self) -> StreamIdGenerator:
        """The generator, for a write (raises `NotStreamWriter` on a follower)."""
        assert self._ids is not None, "E2eKeysHandler.load() was not run"
        self._ids.check_writer("device_lists")
        return self._ids

    async def on_replicated(self, token: int, rows: Sequence[DeviceListStreamRow]) -> None:
        """A follower applied the writer's device-list changes up to `token`: wake whom
        `_announce` wakes on the writer. Checkpoint: yes."""
        assert self._ids is not None, "E2eKeysHandler.load() was not run"
        self._ids.advance(token)
        await self._notify_sharing({row.user_id for row in rows if row.only_for is None})
        private = {row.only_for for row in rows if row.only_for is not None}
        if private:
            self._notifier.notify(users=private)

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(":" + self._server_name)

    # -- the query API /sync uses ---------------------------------------------------------

    async def changed_since(self, user_id: str, since: int, upto: int) -> set[str]:
        """Users whose device list or keys changed in (since, upto] (device_lists positions)
        who share a joined room with `user_id` now, or are `user_id`; plus users whose
        master key `user_id` signed in that range. Checkpoint: yes."""
        return await self._lists.changed_users(user_id, since, upto)

    async def device_list_changes(
        self, user_id: str, since: StreamToken, upto: StreamToken
    ) -> DeviceListChanges:
        """`changed_since` plus the membership rules: users the user newly shares a room with
        are ``changed``, users they no longer share any room with are ``left`` (membership
        changes between the tokens' events positions). Checkpoint: yes."""
        changed = await self.changed_since(user_id, since.device_lists, upto.device_lists)
        sharing = await self._lists.sharing_changes(user_id, since.events, upto.events)
        changed |= sharing.newly_shared
        return DeviceListChanges(frozenset(changed), sharing.no_longer_shared - changed)

    async def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys of a device per algorithm (``signed_curve25519`` always
        present, as Synapse reports it). Checkpoint: yes."""
        return await self._keys.one_time_key_counts(user_id, device_id)

    async def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        """Algorithms whose fallback key of the device is still unused. Checkpoint: yes."""
        return await self._keys.unused_fallback_key_types(user_id, device_id)

    # -- endpoints ------------------------------------------------------------------------

    async def upload_keys(self, requester: Requester, body: JsonDict) -> JsonDict:
        """``POST /keys/upload``: store the device's keys; its one-time key counts.

        Raises:
            MatrixError: 400 for a malformed body, keys of another user or device, or a
                one-time key id re-uploaded with a different key.
        """
        self._generator()  # NotStreamWriter on a follower, before anything is read or written
        user_id, device_id = requester.user_id, requester.device_id
        device_keys = None
        if "device_keys" in body:
            device_keys = check_device_keys(body["device_keys"], user_id, device_id)
        fallback_keys = check_key_map(body.get("fallback_keys"), "fallback_keys")
        algorithms = [key.algorithm for key in fallback_keys]
        if len(set(algorithms)) != len(algorithms):
            # Spec: "There can only be at most one key per algorithm uploaded".
            raise MatrixError("M_INVALID_PARAM", "At most one fallback key per algorithm")
        upload = KeyUpload(
            user_id=user_id,
            device_id=device_id,
            device_keys=device_keys,
            one_time_keys=[
                UploadedKey(k.algorithm, k.key_id, k.key)
                for k in check_key_map(body.get("one_time_keys"), "one_time_keys")
            ],
            fallback_keys=[UploadedKey(k.algorithm, k.key_id, k.key) for k in fallback_keys],
            now_ms=int(self._clock() * 1000),
        )
        try:
            outcome = await self._keys.upload(self._generator(), upload)
        except OneTimeKeyConflictError as err:
            raise MatrixError("M_UNKNOWN", f"{err}", status=400) from None
        if outcome.device_keys_changed:
            await self._notify_sharing([user_id])
        return {"one_time_key_counts": outcome.one_time_key_counts}

    async def query_keys(
        self, requester: Requester, query: Mapping[str, Sequence[str]]
    ) -> JsonDict:
        """``POST /keys/query`` for ``device_keys`` (user id -> device ids, [] for all).

        Invalid user ids are skipped (as Synapse does); every local user asked about appears
        in ``device_keys``, with an empty object when they have no keys.
        """
        failures: JsonDict = {}
        local: list[str] = []
        for user_id in query:
            if not is_valid_user_id(user_id, historical=True):
                continue
            if self._is_local(user_id):
                local.append(user_id)
            else:
                failures[user_id.split(":", 1)[1]] = FEDERATION_FAILURE
        wanted: list[tuple[str, str | None]] = []
        for user_id in local:
            devices: list[str | None] = list(query[user_id]) or [None]
            wanted.extend((user_id, device_id) for device_id in devices)
        found = await self._keys.device_keys(wanted)
        cross = await self.cross_signing_keys(local, requester.user_id)
        return {
            "device_keys": {u: found.get(u, {}) for u in local},
            "failures": failures,
            **cross,
        }

    async def cross_signing_keys(self, user_ids: Sequence[str], reader: str) -> JsonDict:
        """``master_keys``, ``self_signing_keys`` and (the reader's own only)
        ``user_signing_keys`` of `user_ids`, with the signatures `reader` may see."""
        keys = await self._cross_signing_keys.keys_for_reader(user_ids, reader)
        result: JsonDict = {"master_keys": {}, "self_signing_keys": {}, "user_signing_keys": {}}
        for user_id, by_type in keys.items():
            if "master" in by_type:
                result["master_keys"][user_id] = by_type["master"]
            if "self_signing" in by_type:
                result["self_signing_keys"][user_id] = by_type["self_signing"]
            if user_id == reader and "user_signing" in by_type:
                result["user_signing_keys"][user_id] = by_type["user_signing"]
        return result

    async def claim_keys(self, claims: Mapping[str, Mapping[str, str]]) -> JsonDict:
        """``POST /keys/claim``: one key per (user, device, algorithm); see `E2eKeyStore.claim`."""
        failures: JsonDict = {}
        local: list[tuple[str, str, str]] = []
        for user_id, by_device in claims.items():
            if not is_valid_user_id(user_id, historical=True):
                continue
            if not self._is_local(user_id):
                failures[user_id.split(":", 1)[1]] = FEDERATION_FAILURE
                continue
            local.extend((user_id, device, algorithm) for device, algorithm in by_device.items())
        claimed = await self._keys.claim(local) if local else {}
        return {"one_time_keys": claimed, "failures": failures}

    # -- device-list changes --------------------------------------------------------------

    async def on_devices_changed(self, user_id: str) -> None:
        """After a device of `user_id` was created, renamed or deleted: drop the keys of
        deleted devices, record the change, wake the user and those sharing rooms with them.

        Checkpoint: yes.
        """
        await self._keys.delete_keys_of_missing_devices(self._generator(), user_id)
        await self._notify_sharing([user_id])

    async def _announce(self, change: ChangeRecord) -> None:
        await self._notify_sharing(change.user_ids)
        if change.private_user_ids:
            self._notifier.notify(users=[change.signer])

    async def _notify_sharing(self, user_ids: Iterable[str]) -> None:
        users: set[str] = set()
        for user_id in user_ids:
            if self._is_local(user_id):
                users |= await self._lists.users_sharing_room(user_id)
        if users:
            self._notifier.notify(users=users)
