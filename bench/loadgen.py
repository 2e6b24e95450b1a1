"""The benchmarks' client side: a cheap HTTP/1.1 load generator and account set-up.

Not a benchmark itself; imported by the scripts in this directory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import h11

import trio

from benchlib import CLIENT_V3

if TYPE_CHECKING:
    import httpx


def auth_headers(token: str) -> dict[str, str]:
    """The Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}


def check_ok(response: httpx.Response) -> dict[str, Any]:
    """The JSON body of a 200 response.

    Raises:
        RuntimeError: any other status.
    """
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path}:"
            f" {response.status_code} {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


async def register_user(client: httpx.AsyncClient, localpart: str) -> tuple[str, str]:
    """Register `localpart` through ``POST /register`` (``m.login.dummy``).

    Returns:
        The user id and access token.
    """
    body = {"username": localpart, "password": "bench-password", "auth": {"type": "m.login.dummy"}}
    result = check_ok(await client.post(f"{CLIENT_V3}/register", json=body))
    return str(result["user_id"]), str(result["access_token"])


class H11Client:
    """One keep-alive HTTP/1.1 connection spoken with h11 over a trio TCP stream.

    Much cheaper per request than httpx (no URL model, cookie jar or header classes), so that
    the load generator stays well below the server's cost.
    """

    def __init__(self, stream: trio.SocketStream, host: str, port: int) -> None:
        self._stream = stream
        self._address = (host, port)
        self._host = f"{host}:{port}".encode()
        self._conn = h11.Connection(h11.CLIENT)
        # The process that answered last (its ``X-Trioserver-Instance`` header): with
        # `run --workers N` the kernel picks which process accepts a connection.
        self.instance: str | None = None

    @classmethod
    async def connect(cls, base_url: str) -> H11Client:
        """Open a connection to ``http://host:port``."""
        host, port = base_url.split("://", 1)[1].rsplit(":", 1)
        return cls(await trio.open_tcp_stream(host, int(port)), host, int(port))

    async def _reconnect(self) -> None:
        # Hypercorn closes a keep-alive connection after `keep_alive_max_requests` (1,000)
        # requests, as a browser's connection would be, so a long run opens a new one.
        await self._stream.aclose()
        self._stream = await trio.open_tcp_stream(*self._address)
        self._conn = h11.Connection(h11.CLIENT)

    async def aclose(self) -> None:
        """Close the connection."""
        await self._stream.aclose()

    async def request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = None
    ) -> tuple[int, bytes]:
        """Send one request and read the whole response; its status and body."""
        await self.send_request(method, path, body, token)
        return await self.read_response()

    async def send_request(
        self, method: str, path: str, body: bytes | None = None, token: str | None = None
    ) -> None:
        """Write one request (then `read_response`): lets a caller know that a long-poll
        has left before it triggers what should wake it."""
        headers = [(b"Host", self._host)]
        if token is not None:
            headers.append((b"Authorization", b"Bearer " + token.encode()))
        if body is not None:
            headers += [
                (b"Content-Type", b"application/json"),
                (b"Content-Length", b"%d" % len(body)),
            ]
        out = self._conn.send(h11.Request(method=method, target=path, headers=headers))
        if body is not None:
            out += self._conn.send(h11.Data(data=body))
        out += self._conn.send(h11.EndOfMessage())
        await self._stream.send_all(out)

    async def read_response(self) -> tuple[int, bytes]:
        """Read the whole response to the request sent last; its status and body."""
        status = 0
        chunks: list[bytes] = []
        while True:
            event = self._conn.next_event()
            if event is h11.NEED_DATA:
                self._conn.receive_data(await self._stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                for name, value in event.headers:
                    if name == b"x-trioserver-instance":
                        self.instance = value.decode("latin-1")
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                if self._conn.our_state is h11.MUST_CLOSE:
                    await self._reconnect()
                else:
                    self._conn.start_next_cycle()
                return status, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise RuntimeError("the server closed the connection")
