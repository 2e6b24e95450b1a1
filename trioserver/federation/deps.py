"""What the Server-Server API routes use (issue 15), as one frozen object on `ApiDeps`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trioserver.federation.backfill import Backfiller  # noqa: TC004
    from trioserver.federation.event_server import EventServer  # noqa: TC004
    from trioserver.federation.inbound import InboundTransactions  # noqa: TC004
    from trioserver.federation.inbound_auth import RequestAuthenticator  # noqa: TC004
    from trioserver.federation.keyring import KeyRing  # noqa: TC004
    from trioserver.federation.lazy_client import LazyFederationClient  # noqa: TC004
    from trioserver.federation.membership_server import MembershipServer  # noqa: TC004
    from trioserver.federation.own_keys import OwnKeys  # noqa: TC004
    from trioserver.federation.remote_membership import RemoteMembership  # noqa: TC004


@attrs.frozen
class FederationDeps:
    """The federation side of an instance.

    `inbound`, `membership` and `remote` exist only on the events writer: it alone judges and
    stores events from other servers (other instances forward those requests to main).
    """

    own_keys: OwnKeys
    keyring: KeyRing
    client: LazyFederationClient
    authenticator: RequestAuthenticator
    events: EventServer
    inbound: InboundTransactions | None
    membership: MembershipServer | None
    remote: RemoteMembership | None
    backfiller: Backfiller | None = None
    # What /.well-known/matrix/server delegates to (``host:port``), when it is served.
    well_known_server: str | None = None
