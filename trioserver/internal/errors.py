"""The error a worker answers with when main, the writer of every stream, cannot be reached."""

from __future__ import annotations

from trioserver.errors import MatrixError


class WriterUnavailable(MatrixError):
    """Raised on a worker when a write cannot be handed to main.

    Either its replication client is not connected (the answer could not be read back, so
    read-your-writes would not hold), or main's internal listener did not answer (refused,
    reset, timed out, or answered without what the protocol requires). Rendered as 503
    ``M_UNKNOWN``: the client may retry later.
    """

    def __init__(self, detail: str) -> None:
        super().__init__("M_UNKNOWN", f"the events writer is unreachable: {detail}", status=503)
