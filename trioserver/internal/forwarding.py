"""What a worker does with a write it does not make itself: hand it to main.

Theory of operation
-------------------
On a worker, `MatrixApp` gives every POST/PUT/DELETE whose route is not ``local=True`` to a
`Forwarder`, after route matching (404/405 stay local) and before local authentication (main
authenticates the request as the client sent it). The forwarder refuses at once (503) when the
replication client is not connected: the worker could not see the write come back, so its
client would not read its own write here. Otherwise main answers the request on its internal
listener and reports every stream's position once its handler returned; the worker waits
until its replication client has applied those positions, then answers with main's response.
A client that syncs here next therefore sees what it wrote (read-your-writes). If the wait
times out the answer is sent anyway (the write did happen) and a warning is logged.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from trioserver.api.http import Response
from trioserver.errors import MatrixError
from trioserver.internal.errors import WriterUnavailable
from trioserver.internal.protocol import POSITIONS_HEADER
from trioserver.repl.client import ReplicationUnavailable

if TYPE_CHECKING:
    from trioserver.internal.client import ForwardedResponse, MainClient

logger = logging.getLogger(__name__)

# How long a worker waits to have seen its client's write come back by replication.
POSITIONS_TIMEOUT_S = 10.0

# ``wait_for_positions(positions, timeout_s)``: True once every stream is at or past its
# position, False when `timeout_s` passed first (`ReplicationClient.wait_for_positions`).
WaitForPositions = Callable[[Mapping[str, int], float], Awaitable[bool]]

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the worker's edge sets itself.
_DROPPED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "content-type",
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        # The worker names itself: the client asked it, not main.
        "x-trioserver-instance",
        POSITIONS_HEADER,
    }
)


class Forwarder:
    """Forwards a worker's non-local writes to main (see the module docstring)."""

    def __init__(
        self,
        main: MainClient,
        *,
        is_connected: Callable[[], bool],
        wait_for_positions: WaitForPositions,
        positions_timeout_s: float = POSITIONS_TIMEOUT_S,
    ) -> None:
        self._main = main
        self._is_connected = is_connected
        self._wait_for_positions = wait_for_positions
        self._positions_timeout_s = positions_timeout_s

    async def forward(
        self,
        method: str,
        path_and_query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        client_addr: str | None,
    ) -> Response:
        """Have main answer a client request, and wait to have seen its writes.

        Checkpoint: yes.

        Raises:
            WriterUnavailable: not connected to main's replication, or main did not answer.
        """
        if not self._is_connected():
            raise WriterUnavailable("this worker is not connected to replication")
        path = path_and_query.split("?", 1)[0]
        if any(segment in _DOT_SEGMENTS for segment in path.split("/")):
            # An HTTP client would resolve them and send the request (with the replication
            # secret) to another internal path.
            raise MatrixError("M_UNRECOGNIZED", "Unrecognized request", status=404)
        answer = await self._main.forward(method, path_and_query, headers, body, client_addr or "")
        # Main has answered: the write is done. A client told otherwise would retry it (a
        # second room, a second message without a txn id), so it gets main's answer even if
        # replication does not show the write here in time or drops meanwhile.
        try:
            seen = await self._wait_for_positions(answer.positions, self._positions_timeout_s)
        except ReplicationUnavailable:
            seen = False
        if not seen:
            logger.warning(
                "%s %s: replication did not reach %s within %.0f s; answering anyway",
                method,
                path,
                answer.positions,
                self._positions_timeout_s,
            )
        return _response(answer)


# Path segments an HTTP client resolves ("." and "..", also percent-encoded).
_DOT_SEGMENTS = frozenset(
    {".", "..", "%2e", "%2E", "%2e%2e", "%2E%2E", ".%2e", ".%2E", "%2e.", "%2E."}
)


def _response(answer: ForwardedResponse) -> Response:
    content_type = "application/json"
    kept: list[tuple[str, str]] = []
    for name, value in answer.headers:
        lower = name.lower()
        if lower == "content-type":
            content_type = value
        elif lower not in _DROPPED_HEADERS:
            kept.append((lower, value))
    return Response(
        status=answer.status, headers=tuple(kept), raw=answer.body, content_type=content_type
    )


class PresenceForwarder:
    """A worker's ``/sync`` presence, told to main (the presence writer).

    A sync that starts waits until this instance has applied the positions main answered
    with, as a forwarded write does: main's presence change is then part of the token the
    sync compares against, instead of waking the sync right after it starts to wait.
    `wait_for_positions` is set once the replication client exists (it is built from the
    streams, which need this forwarder first).
    """

    def __init__(self, main: MainClient) -> None:
        self._main = main
        self.wait_for_positions: WaitForPositions | None = None

    async def __call__(self, user_id: str, state: str | None, syncing: bool) -> None:
        """Checkpoint: yes.

        Raises:
            WriterUnavailable: main could not be told.
        """
        positions = await self._main.presence_sync(user_id, state, syncing)
        if not syncing or self.wait_for_positions is None:
            return
        # Cut off from main while waiting: the sync goes on with what this instance has.
        with contextlib.suppress(ReplicationUnavailable):
            await self.wait_for_positions(positions, _PRESENCE_WAIT_S)


# A presence change is one row: it arrives within milliseconds unless main is in trouble.
_PRESENCE_WAIT_S = 2.0
