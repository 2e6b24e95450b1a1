"""Cross-signing: uploading a user's cross-signing keys and signatures of keys.

Theory of operation
-------------------
``POST /keys/device_signing/upload`` stores a master key and the self-signing and
user-signing keys it signed. Whether it needs user-interactive auth is decided first
(`upload_state`): not when the user has no master key yet, and not when every key sent is the
one already stored (spec: UIA exceptions, MSC3967; Synapse answers such a retry with ``{}``
without storing anything).

``POST /keys/signatures/upload`` checks each signed object against the stored key (apart from
signatures) and the signature against the signing key, then stores the signatures; each
object that fails is reported in ``failures`` instead of failing the request:

- the user's own devices, signed by their self-signing key;
- the user's own master key, signed by their devices;
- other users' master keys, signed by the user's user-signing key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from trioserver.errors import MatrixError
from trioserver.handlers.e2e_validation import (
    BODY_FIELDS,
    KEY_TYPES,
    CrossSigningKey,
    check_signature,
    device_verify_key,
    matches_stored,
    parse_cross_signing_key,
)
from trioserver.stores.cross_signing import KeyIdInUseError, NewCrossSigningKey, NewSignature

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trioserver.stores.cross_signing import ChangeRecord, CrossSigningStore
    from trioserver.stores.e2e_keys import E2eKeyStore
    from trioserver.streams import StreamIdGenerator

JsonDict = dict[str, Any]
UploadState = Literal["unchanged", "first", "replace"]
Failures = dict[str, dict[str, JsonDict]]


def _failure(err: MatrixError) -> JsonDict:
    # The spec's Error shape (errcode, error), plus the status as Synapse reports it.
    return {"status": err.status, "errcode": err.errcode, "error": err.message}


def _not_found(message: str) -> MatrixError:
    return MatrixError("M_NOT_FOUND", message)


def _mismatch() -> MatrixError:
    return MatrixError("M_UNKNOWN", "Key does not match", status=400)


def _own_signatures_by(signed: JsonDict, user_id: str) -> dict[str, Any]:
    signatures = signed.get("signatures")
    by_user = signatures.get(user_id) if isinstance(signatures, dict) else None
    if not isinstance(by_user, dict) or not by_user:
        raise MatrixError("M_INVALID_SIGNATURE", "Invalid signature")
    return by_user


class CrossSigningHandler:
    """Uploads of cross-signing keys and signatures."""

    def __init__(
        self,
        keys: E2eKeyStore,
        store: CrossSigningStore,
        ids: Callable[[], StreamIdGenerator],
        announce: Callable[[ChangeRecord], Awaitable[None]],
    ) -> None:
        self._keys = keys
        self._store = store
        self._ids = ids
        self._announce = announce

    async def _stored_key(self, user_id: str, key_type: str) -> CrossSigningKey | None:
        stored = (await self._store.keys([user_id])).get(user_id, {}).get(key_type)
        return None if stored is None else parse_cross_signing_key(stored.key, user_id, key_type)

    async def upload_state(self, user_id: str, body: JsonDict) -> UploadState:
        """Whether an upload changes nothing, sets up cross-signing, or replaces keys."""
        stored = (await self._store.keys([user_id])).get(user_id, {})
        provided = {t: body[BODY_FIELDS[t]] for t in KEY_TYPES if body.get(BODY_FIELDS[t])}
        if all(t in stored and stored[t].key == key for t, key in provided.items()):
            return "unchanged"
        return "replace" if "master" in stored else "first"

    async def upload_keys(self, user_id: str, body: JsonDict) -> None:
        """Check and store the cross-signing keys in `body` (UIA already done).

        Raises:
            MatrixError: 400 ``M_MISSING_PARAM`` without any master key, 400
                ``M_INVALID_PARAM`` for a malformed key, 400 ``M_INVALID_SIGNATURE`` when a
                key is not signed by the master key, 403 ``M_FORBIDDEN`` when a public key
                equals one of the user's device ids.
        """
        new: list[CrossSigningKey] = []
        if body.get("master_key"):
            master = parse_cross_signing_key(body["master_key"], user_id, "master")
            new.append(master)
        else:
            stored = await self._stored_key(user_id, "master")
            if stored is None:
                raise MatrixError("M_MISSING_PARAM", "No master key available")
            master = stored
        for key_type in ("self_signing", "user_signing"):
            value = body.get(BODY_FIELDS[key_type])
            if value:
                key = parse_cross_signing_key(value, user_id, key_type)
                check_signature(key.key, user_id, master.verify_key)
                new.append(key)
        if not new:
            return
        rows = [NewCrossSigningKey(k.key_type, k.public_key, k.key) for k in new]
        try:
            change = await self._store.set_keys(self._ids(), user_id, rows)
        except KeyIdInUseError:
            raise MatrixError("M_FORBIDDEN", "Key ID in use") from None
        await self._announce(change)

    async def upload_signatures(self, user_id: str, body: JsonDict) -> JsonDict:
        """Check and store signatures (``POST /keys/signatures/upload``).

        Returns:
            The response: ``failures`` by user id and key id.

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` when the body is not user id -> key id ->
                object.
        """
        for entries in body.values():
            if not isinstance(entries, dict) or not all(
                isinstance(v, dict) for v in entries.values()
            ):
                raise MatrixError("M_INVALID_PARAM", "Invalid parameter")
        failures: Failures = {}
        accepted: list[NewSignature] = []
        if body.get(user_id):
            accepted += await self._own_signatures(user_id, body[user_id], failures)
        for target, entries in body.items():
            if target != user_id and entries:
                accepted += await self._signatures_of_other(user_id, target, entries, failures)
        if accepted:
            await self._announce(await self._store.add_signatures(self._ids(), user_id, accepted))
        return {"failures": failures}

    async def _own_signatures(
        self, user_id: str, entries: dict[str, JsonDict], failures: Failures
    ) -> list[NewSignature]:
        master = await self._stored_key(user_id, "master")
        self_signing = await self._stored_key(user_id, "self_signing")
        devices = (await self._keys.device_keys([(user_id, None)])).get(user_id, {})
        accepted: list[NewSignature] = []
        for key_id, signed in entries.items():
            try:
                if master is not None and key_id == master.public_key:
                    accepted += self._master_signed_by_devices(user_id, signed, master, devices)
                    continue
                if self_signing is None:
                    raise _not_found(f"No self_signing key found for {user_id}")
                device = devices.get(key_id)
                if device is None:
                    raise _not_found("Unknown device")
                accepted.append(self._check_signed(user_id, signed, device, self_signing))
            except MatrixError as err:
                failures.setdefault(user_id, {})[key_id] = _failure(err)
        return accepted

    @staticmethod
    def _check_signed(
        signer: str, signed: JsonDict, stored: JsonDict, signing_key: CrossSigningKey
    ) -> NewSignature:
        # `stored` is the target as we hold it: the user's device keys or a master key.
        target_user = stored["user_id"]
        target_id = stored.get("device_id") or next(iter(stored["keys"].values()))
        signatures = _own_signatures_by(signed, signer)
        if signing_key.key_id not in signatures:
            raise MatrixError("M_INVALID_SIGNATURE", "Invalid signature")
        if not matches_stored(signed, stored):
            raise _mismatch()
        check_signature(signed, signer, signing_key.verify_key)
        return NewSignature(
            signing_key.key_id, target_user, target_id, signatures[signing_key.key_id]
        )

    @staticmethod
    def _master_signed_by_devices(
        user_id: str, signed: JsonDict, master: CrossSigningKey, devices: dict[str, JsonDict]
    ) -> list[NewSignature]:
        signatures = _own_signatures_by(signed, user_id)
        if not matches_stored(signed, master.key):
            raise _mismatch()
        known = master.key.get("signatures", {}).get(user_id, {})
        accepted: list[NewSignature] = []
        for signing_key_id, signature in signatures.items():
            if known.get(signing_key_id) == signature:
                continue  # already part of the stored key (e.g. its upload's own signatures)
            _, _, device_id = signing_key_id.partition(":")
            device = devices.get(device_id)
            verify_key = None if device is None else device_verify_key(device, signing_key_id)
            if verify_key is None:
                raise MatrixError("M_INVALID_SIGNATURE", "Invalid signature")
            check_signature(signed, user_id, verify_key)
            accepted.append(NewSignature(signing_key_id, user_id, master.public_key, signature))
        return accepted

    async def _signatures_of_other(
        self, user_id: str, target: str, entries: dict[str, JsonDict], failures: Failures
    ) -> list[NewSignature]:
        user_signing = await self._stored_key(user_id, "user_signing")
        stored = (await self._store.keys([target])).get(target, {}).get("master")
        if user_signing is None or stored is None:
            missing = "user_signing key" if user_signing is None else f"master key for {target}"
            failures[target] = dict.fromkeys(entries, _failure(_not_found(f"No {missing}")))
            return []
        accepted: list[NewSignature] = []
        for key_id, signed in entries.items():
            try:
                if key_id != stored.public_key:
                    raise _not_found("Unknown device")
                accepted.append(self._check_signed(user_id, signed, stored.key, user_signing))
            except MatrixError as err:
                failures.setdefault(target, {})[key_id] = _failure(err)
        return accepted
