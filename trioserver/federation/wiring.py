"""Building the federation side of an instance (issue 15) from the config and the parts
`trioserver.wiring` already built. No I/O here."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs

import trio

from trioserver.federation.deps import FederationDeps
from trioserver.federation.event_server import EventServer
from trioserver.federation.inbound_auth import RequestAuthenticator
from trioserver.federation.keyring import KeyRing, Notary
from trioserver.federation.lazy_client import LazyFederationClient
from trioserver.federation.own_keys import OwnKeys, old_keys_path, read_old_keys
from trioserver.keys import key_id
from trioserver.stores.federation_inbound import FederationInboundStore
from trioserver.stores.server_keys import ServerKeyStore

if TYPE_CHECKING:
    from signedjson.types import SigningKey

    from trioserver.config import Config, FederationConfig
    from trioserver.storage.persistence import EventPersister
    from trioserver.stores.database import Database
    from trioserver.stores.erasure import ErasureStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.state import StateStore
    from trioserver.supervisor import Subsystem  # noqa: TC004


def well_known_delegation(fed: FederationConfig) -> str | None:
    """The ``m.server`` of this server's /.well-known/matrix/server (None: not served)."""
    if not fed.serve_well_known or fed.public_baseurl is None:
        return None
    url = urlsplit(fed.public_baseurl)
    assert url.hostname is not None  # checked with the config
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{host}:{url.port or 443}"


logger = logging.getLogger(__name__)


@attrs.frozen
class FederationPart:
    """The federation deps and the background tasks they need."""

    deps: FederationDeps
    subsystems: tuple[Subsystem, ...]


def build_federation(
    config: Config,
    db: Database,
    signing_key: SigningKey,
    *,
    events: EventStore,
    state: StateStore,
    persister: EventPersister | None,
    erasure: ErasureStore | None = None,
) -> FederationPart:
    """Keys, the outbound client, and (on the events writer) inbound handling."""
    name = config.server_name
    fed = config.federation
    # The key the server signs with was loaded by the caller; old keys (after a rotation)
    # are in a sidecar file, absent until the first rotation.
    old_keys = read_old_keys(old_keys_path(config.data_path(config.signing_key_path)))
    old_keys.pop(key_id(signing_key), None)
    own_keys = OwnKeys(name, signing_key, old_keys)
    client = LazyFederationClient(fed, server_name=name, signing_key=signing_key)
    keyring = KeyRing(
        own_keys,
        ServerKeyStore(db),
        client,
        notaries=[Notary(server) for server in fed.trusted_key_servers],
        timeout_s=min(fed.request_timeout, 30.0),
    )
    if persister is None and config.is_main:
        # Issue 13's layout with events on a worker: main cannot judge events from other
        # servers itself, and forwarding them to the writer is not built yet.
        logger.warning(
            "federation: the events writer is %r, not main, so this deployment refuses"
            ' events from other servers (set [stream_writers] events = "main")',
            config.stream_writers.events,
        )
    store = FederationInboundStore(db)
    event_server = EventServer(
        server_name=name, events=events, state=state, store=store, erasure=erasure
    )
    inbound = membership = remote = None
    if persister is not None:
        # The writer's side only: a worker never loads it (issue 13: its idle memory).
        from trioserver.federation.gaps import GapFiller
        from trioserver.federation.inbound import InboundTransactions
        from trioserver.federation.membership_server import MembershipServer
        from trioserver.federation.remote_membership import RemoteMembership

        gaps = GapFiller(client=client, events=events, store=store, verifier=keyring)
        inbound = InboundTransactions(
            server_name=name,
            persister=persister,
            events=events,
            state=state,
            store=store,
            verifier=keyring,
            gaps=gaps,
        )
        membership = MembershipServer(
            server_name=name,
            signing_key=signing_key,
            db=db,
            events=events,
            persister=persister,
            verifier=keyring,
            event_server=event_server,
            inbound=inbound,
        )
        remote = RemoteMembership(
            server_name=name,
            signing_key=signing_key,
            client=client,
            persister=persister,
            verifier=keyring,
            inbound=inbound,
        )
    backfiller = None
    if persister is not None and inbound is not None:
        from trioserver.federation.backfill import Backfiller

        backfiller = Backfiller(
            server_name=name,
            client=client,
            db=db,
            events=events,
            event_server=event_server,
            persister=persister,
            verifier=keyring,
            inbound=inbound,
        )
    deps = FederationDeps(
        own_keys=own_keys,
        keyring=keyring,
        client=client,
        authenticator=RequestAuthenticator(keyring, name, fed.domain_whitelist),
        events=event_server,
        inbound=inbound,
        membership=membership,
        remote=remote,
        backfiller=backfiller,
        well_known_server=well_known_delegation(fed),
    )

    async def run_client(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Owns the client's pooled connections: closed when the server stops.
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()

    subsystems: list[Subsystem] = [run_client]
    if persister is not None and config.runs_role("federation_sender"):
        from trioserver.federation.sender import FederationSender
        from trioserver.stores.federation_sender import FederationSenderStore

        sender = FederationSender(
            server_name=name,
            store=FederationSenderStore(db),
            events=events,
            state=state,
            transport=client,
            request_timeout=fed.request_timeout,
        )
        persister.add_listener(sender.on_persisted)
        if inbound is not None:
            # A server that sends us a transaction is up again: what it missed goes now.
            inbound.on_origin_seen = sender.wake_destination
        if membership is not None:
            membership.relay = sender.relay_on_behalf_of
        subsystems.append(sender.run)
    return FederationPart(deps, tuple(subsystems))
