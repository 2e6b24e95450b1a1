"""Adding and checking event hashes and signatures.

Theory of operation (Server-Server API, "Signing Events"):
    To sign, the content hash is stored in ``hashes.sha256``, the event is
    redacted with its room version's algorithm, and the redacted copy is
    signed as described in Appendices, "Signing JSON" (``signedjson`` does
    the canonical encoding and ed25519 signing).  Only the signature is copied
    back, so the signature covers the essential keys plus the content hash.

    To verify, the event is redacted again and the signature checked on that
    copy, which is why verification succeeds for both the full event and a
    redacted copy.  Which servers must have signed depends on the room version
    and the event (:func:`required_signature_servers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json
from unpaddedbase64 import encode_base64

from trioserver.events import constants as c
from trioserver.events.errors import EventSignatureError
from trioserver.events.hashing import compute_content_hash
from trioserver.events.jsonutil import JsonDict, domain_of
from trioserver.events.redaction import prune_event_dict

if TYPE_CHECKING:
    from signedjson.types import SigningKey, VerifyKey

    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion


def compute_event_signature(
    room_version: RoomVersion,
    pdu: Mapping[str, Any],
    server_name: str,
    signing_key: SigningKey,
) -> dict[str, dict[str, str]]:
    """Sign the redacted form of a PDU.

    Args:
        room_version: Selects the redaction algorithm.
        pdu: The event, which must already carry its ``hashes``.
        server_name: The signing server's name.
        signing_key: The server's ed25519 signing key (``signedjson.key``).

    Returns:
        The ``signatures`` object of the redacted event, including any
        signatures the PDU already had.
    """
    redacted = prune_event_dict(room_version, pdu)
    signed = sign_json(redacted, server_name, signing_key)
    signatures: dict[str, dict[str, str]] = signed["signatures"]
    return signatures


def add_hashes_and_signatures(
    room_version: RoomVersion,
    pdu: JsonDict,
    server_name: str,
    signing_key: SigningKey,
) -> None:
    """Add the content hash and this server's signature to a PDU, in place.

    Args:
        room_version: The room version of the event.
        pdu: The event in federation format; ``hashes`` and ``signatures``
            are created or updated.
        server_name: The signing server's name.
        signing_key: The server's ed25519 signing key.
    """
    hashes = pdu.get("hashes")
    pdu["hashes"] = dict(hashes) if isinstance(hashes, Mapping) else {}
    pdu["hashes"]["sha256"] = encode_base64(compute_content_hash(pdu))
    pdu["signatures"] = compute_event_signature(room_version, pdu, server_name, signing_key)


def verify_event_signature(
    room_version: RoomVersion,
    pdu: Mapping[str, Any],
    server_name: str,
    verify_key: VerifyKey,
) -> None:
    """Check that ``server_name`` signed a PDU with ``verify_key``.

    The check runs on the redacted event, so it succeeds for a redacted copy
    too.  The key's ``alg``/``version`` attributes select the signature
    (``signedjson.key.decode_verify_key_base64`` sets them).

    Args:
        room_version: Selects the redaction algorithm.
        pdu: The event in federation format.
        server_name: The server whose signature to check.
        verify_key: That server's public key.

    Raises:
        EventSignatureError: If the signature is missing or invalid.
    """
    redacted = prune_event_dict(room_version, pdu)
    try:
        verify_signed_json(redacted, server_name, verify_key)
    except SignatureVerifyException as exc:
        raise EventSignatureError(str(exc)) from exc


def is_third_party_invite(event: Event) -> bool:
    """Whether the event is an invite produced from a third-party invite."""
    return (
        event.type == c.MEMBER
        and event.membership == c.Membership.INVITE
        and "third_party_invite" in event.content
    )


def required_signature_servers(room_version: RoomVersion, event: Event) -> frozenset[str]:
    """The servers whose signatures a received event must carry.

    From "Validating hashes and signatures on received events": the sender's
    server, except for an invite made from a third-party invite (which
    "the server which actually sends" may sign instead); in v1/v2 also the
    server in the event ID.  From auth rule 4.2 (v8+): the server of the
    user named in ``join_authorised_via_users_server``.

    The caller verifies each of these with :func:`verify_event_signature`
    using the server's published keys.

    Args:
        room_version: The room version of the event.
        event: The received event.

    Returns:
        Server names (never empty for a well-formed non-3PID event).
    """
    servers: set[str] = set()
    if not is_third_party_invite(event):
        sender_domain = domain_of(event.sender)
        if sender_domain is not None:
            servers.add(sender_domain)
    if room_version.event_id_in_pdu:
        event_id_domain = domain_of(event.event_id)
        if event_id_domain is not None:
            servers.add(event_id_domain)
    if room_version.restricted_join_rule and event.type == c.MEMBER:
        authoriser = event.content.get(c.AUTHORISING_USER)
        if isinstance(authoriser, str) and domain_of(authoriser) is not None:
            servers.add(str(domain_of(authoriser)))
    return frozenset(servers)
