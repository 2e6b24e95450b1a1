"""Server-Server API routes (issue 15): ``/_matrix/federation/...`` and ``/_matrix/key/...``.

Each module holds a ``ROUTES`` table of routes with ``auth="federation"`` (X-Matrix, the
origin is `Request.origin`) or ``auth="none"`` (the key endpoints); `trioserver.api.app`
serves them with the client API on the same listener.
"""

FEDERATION = "/_matrix/federation"
KEY = "/_matrix/key"
