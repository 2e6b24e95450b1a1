"""The names both ends of internal HTTP agree on: paths and headers.

A forwarded client request keeps its method, path and query; it goes to
``CLIENT_PREFIX + <original path>``. Its ``Authorization`` header (the client's access token)
travels as `FORWARDED_AUTHORIZATION`, because ``Authorization`` itself carries the internal
secret (``Bearer <replication.secret>``) on every internal request.
"""

from __future__ import annotations

PREFIX = "/_trioserver/replication"
CLIENT_PREFIX = f"{PREFIX}/client"
STREAM_UPDATES_PREFIX = f"{PREFIX}/stream_updates/"
PRESENCE_SYNC_PATH = f"{PREFIX}/presence_sync"

# Main's answer to a forwarded request: JSON of every replicated stream's token, read after
# the handler returned (the worker waits to have seen these before answering its client).
POSITIONS_HEADER = "x-trioserver-positions"
# The client's address as the worker saw it; trusted only on the internal listener.
CLIENT_ADDR_HEADER = "x-trioserver-client-addr"
FORWARDED_AUTHORIZATION = "x-trioserver-forwarded-authorization"
# The client's headers a forwarded request carries (the others are the worker's business).
FORWARDED_HEADERS = frozenset({"authorization", "content-type", "user-agent"})
# On an events writer that is not main: persist the events main's handlers send.
SUBMIT_EVENTS_PATH = f"{PREFIX}/submit_events"
# On main, from such a writer: write caches-stream invalidations (main writes that stream).
INVALIDATE_PATH = f"{PREFIX}/invalidate"
# On main, from a worker (issue 15): fetch a room's older history from other servers.
BACKFILL_PATH = f"{PREFIX}/backfill"
