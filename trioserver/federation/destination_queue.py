"""One destination's outbound queue, its backoff, and the transaction format (pure: no I/O).

Theory of operation
-------------------
A `DestinationQueue` is in one of three situations, which `FederationSender` moves it
between:

- *healthy*: PDUs and EDUs wait in memory (`pdus`, `edus`) and go out in transactions of at
  most `MAX_PDUS_PER_TXN` PDUs and `MAX_EDUS_PER_TXN` EDUs (Server-Server API,
  "Transactions"), one transaction at a time.
- *backing off* (`RetryState.backing_off`): the last attempt failed and the wait is not over.
  Nothing is kept for it: PDUs are already in the database and EDUs are ephemeral. It only
  remembers that it is behind (`catching_up`, with `last_successful_stream_ordering`).
- *catching up*: the wait is over and there is news for it (a new event, or it contacted us:
  `FederationSender.wake_destination`). Its missed PDUs are read from the database, the newest
  per shared room (`FederationSenderStore.catch_up_events`), not replayed from memory; new
  events meanwhile are not queued either, the next catch-up read finds them.

Failures are classified as Synapse's retry limiter does for ``/send`` (`classify_failure`):
no answer, 5xx, 401, 404 (the server was decommissioned), 408 and 429 back off; any other
4xx means the server is up and refuses this transaction, which is dropped (logged) instead
of being sent again, since the same content would be refused the same way.
"""

from __future__ import annotations

import collections
import enum
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from trioserver.stores.events import StoredEvent
from trioserver.stores.federation_sender import DestinationRow

if TYPE_CHECKING:
    import random

MAX_PDUS_PER_TXN = 50
MAX_EDUS_PER_TXN = 100
# Past this many waiting PDUs a slow destination is treated as behind: they are dropped from
# memory and caught up from the database, so memory stays bounded whatever its speed.
MAX_PENDING_PDUS = 500
# EDUs are ephemeral: past this many waiting, the oldest are dropped.
MAX_PENDING_EDUS = 1_000
# Statuses after which a destination is backed off (the rest of 4xx: the server answered).
BACKOFF_STATUSES = frozenset({401, 404, 408, 429})


class TransactionTransport(Protocol):
    """What the sender needs of the federation client
    (`trioserver.federation.transport.FederationClient`)."""

    async def put_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the transport's own deadline
    ) -> Any:
        """Send a signed ``PUT`` to `destination`; return the decoded JSON response.

        Raises an exception (with an int ``status`` attribute for an error response) when
        the request fails.
        """
        ...


@attrs.frozen
class BackoffPolicy:
    """How long to wait after failures: `min_ms`, doubling up to `max_ms`, with jitter.

    The jitter (a factor in ``[1 - jitter, 1 + jitter]``) spreads the retries of the many
    destinations a network outage fails at once.
    """

    min_ms: int = 5_000
    max_ms: int = 24 * 3_600_000
    jitter: float = 0.2

    def next_interval(self, previous_ms: int, rng: random.Random) -> int:
        """The wait after another failure, given the wait after the last one (0: none)."""
        base = self.min_ms if previous_ms <= 0 else previous_ms * 2
        jittered = int(base * rng.uniform(1 - self.jitter, 1 + self.jitter))
        return max(self.min_ms, min(jittered, self.max_ms))


@attrs.define
class RetryState:
    """A destination's backoff and progress: the mutable twin of its `DestinationRow`."""

    retry_last_ts: int = 0
    retry_interval: int = 0
    failure_ts: int | None = None
    last_successful_stream_ordering: int | None = None

    @classmethod
    def from_row(cls, row: DestinationRow) -> RetryState:
        """The state stored in `row`."""
        return cls(
            row.retry_last_ts,
            row.retry_interval,
            row.failure_ts,
            row.last_successful_stream_ordering,
        )

    def to_row(self, destination: str) -> DestinationRow:
        """This state as the row to store."""
        return DestinationRow(
            destination,
            self.retry_last_ts,
            self.retry_interval,
            self.failure_ts,
            self.last_successful_stream_ordering,
        )

    def backing_off(self, now_ms: int) -> bool:
        """Whether the wait after the last failure is still running."""
        return self.retry_interval > 0 and now_ms < self.retry_last_ts + self.retry_interval

    def record_failure(self, now_ms: int, policy: BackoffPolicy, rng: random.Random) -> None:
        """Another failed attempt: wait longer."""
        self.retry_interval = policy.next_interval(self.retry_interval, rng)
        self.retry_last_ts = now_ms
        if self.failure_ts is None:
            self.failure_ts = now_ms

    def record_reachable(self) -> bool:
        """The destination answered: no more backoff. Returns whether anything changed."""
        if self.retry_interval == 0 and self.retry_last_ts == 0 and self.failure_ts is None:
            return False
        self.retry_last_ts = 0
        self.retry_interval = 0
        self.failure_ts = None
        return True

    def record_delivered(self, stream_ordering: int) -> bool:
        """Events up to `stream_ordering` are delivered. Returns whether anything changed."""
        if (
            self.last_successful_stream_ordering is not None
            and self.last_successful_stream_ordering >= stream_ordering
        ):
            return False
        self.last_successful_stream_ordering = stream_ordering
        return True


class Outcome(enum.Enum):
    """How one transaction attempt ended."""

    SENT = "sent"
    # The destination answered but refused the transaction (a 4xx that does not back off).
    REFUSED = "refused"
    FAILED = "failed"


def classify_failure(exc: Exception) -> Outcome:
    """`Outcome.REFUSED` for a status the destination should not be retried for, else
    `Outcome.FAILED` (back off). Only the exception's ``status`` is looked at (the
    transport's ``RemoteError`` has one): anything without a status is a failure to reach
    the destination, including a bug in the transport.
    """
    status = getattr(exc, "status", None)
    if isinstance(status, int) and 400 <= status < 500 and status not in BACKOFF_STATUSES:
        return Outcome.REFUSED
    return Outcome.FAILED


def transaction_body(
    origin: str, origin_server_ts: int, pdus: list[dict[str, Any]], edus: list[dict[str, Any]]
) -> dict[str, Any]:
    """The JSON body of a transaction (Server-Server API, "Transactions")."""
    return {"origin": origin, "origin_server_ts": origin_server_ts, "pdus": pdus, "edus": edus}


def pdu_errors(response: Any) -> list[tuple[str, Any]]:
    """The PDUs a transaction's response says the destination could not process, with its
    error; they are not sent again (Server-Server API, "Transactions": the response maps
    event ids to results, an ``error`` key meaning failure)."""
    results = response.get("pdus") if isinstance(response, dict) else None
    if not isinstance(results, dict):
        return []
    return [
        (event_id, result["error"])
        for event_id, result in results.items()
        if isinstance(result, dict) and "error" in result
    ]


def pdu_json(stored: StoredEvent) -> dict[str, Any]:
    """A stored event as a PDU to send: federation format, no ``unsigned``, and pruned when
    it was redacted since (a server that fetched it now would get the same)."""
    event = stored.event.redacted() if stored.redacted_by is not None else stored.event
    return event.get_pdu_json()


@attrs.define(eq=False)
class DestinationQueue:
    """What is waiting for one destination, and whether a task is sending it."""

    destination: str
    retry: RetryState = attrs.field(factory=RetryState)
    pdus: collections.deque[StoredEvent] = attrs.field(factory=collections.deque)
    edus: collections.deque[dict[str, Any]] = attrs.field(factory=collections.deque)
    # Behind: missed PDUs are read from the database (see the module docstring).
    catching_up: bool = False
    # Set when a new event arrived while catching up: read again before stopping.
    news_while_catching_up: bool = False
    # A task for it is waiting to start / is running (`FederationSender`).
    scheduled: bool = False
    running: bool = False

    def has_work(self) -> bool:
        """Whether a task should run for it (when not backing off)."""
        return self.catching_up or bool(self.pdus) or bool(self.edus)

    def add_pdu(self, stored: StoredEvent, now_ms: int) -> bool:
        """Queue an event for it. Returns whether a task should be started."""
        if self.retry.backing_off(now_ms):
            self.fall_behind(stored.stream_ordering)
            return False
        if self.catching_up:
            self.news_while_catching_up = True
            return True
        self.pdus.append(stored)
        if len(self.pdus) > MAX_PENDING_PDUS:
            self.fall_behind()
        return True

    def add_edu(self, edu: dict[str, Any], now_ms: int) -> bool:
        """Queue an EDU for it. Returns whether a task should be started."""
        if self.retry.backing_off(now_ms):
            return False
        self.edus.append(edu)
        if len(self.edus) > MAX_PENDING_EDUS:
            self.edus.popleft()
        return True

    def fall_behind(self, first_missed: int | None = None) -> None:
        """Drop the PDUs waiting in memory and remember the destination is behind.

        Args:
            first_missed: the stream position of an event it misses that is not queued
                (the one that arrived while backing off), if any.
        """
        if self.pdus:
            first_missed = self.pdus[0].stream_ordering
        self.pdus.clear()
        if first_missed is not None and self.retry.last_successful_stream_ordering is None:
            # Never served before: it is behind from the first event it missed.
            self.retry.last_successful_stream_ordering = first_missed - 1
        if self.retry.last_successful_stream_ordering is not None:
            self.catching_up = True

    def next_pdus(self) -> list[StoredEvent]:
        """The PDUs of the next transaction (still queued until `delivered`)."""
        return [self.pdus[i] for i in range(min(MAX_PDUS_PER_TXN, len(self.pdus)))]

    def next_edus(self) -> list[dict[str, Any]]:
        """The EDUs of the next transaction (still queued until `delivered`)."""
        return [self.edus[i] for i in range(min(MAX_EDUS_PER_TXN, len(self.edus)))]

    def delivered(self, pdus: list[StoredEvent], edus: list[dict[str, Any]]) -> None:
        """Remove a transaction's PDUs and EDUs once it is done with (sent or refused).

        Only what is still at the front is removed: falling behind during the attempt has
        cleared the queue, and EDUs may have been dropped as too many.
        """
        for stored in pdus:
            if self.pdus and self.pdus[0] is stored:
                self.pdus.popleft()
        for edu in edus:
            if self.edus and self.edus[0] is edu:
                self.edus.popleft()

    def load(self, row: DestinationRow, newest_local: int | None) -> None:
        """Take the state stored for it (at start).

        Args:
            row: its stored row.
            newest_local: the position of this server's newest event. Served up to an
                older one, it may have missed events while this server was down (or had
                them queued in memory when it stopped): it catches up first.
        """
        self.retry = RetryState.from_row(row)
        served = row.last_successful_stream_ordering
        self.catching_up = (
            served is not None and newest_local is not None and served < newest_local
        )
