"""The federation client, made on first use.

Every instance answers other servers' reads and its clients' questions about other servers,
but most instances of a deployment (the workers) rarely talk to another server themselves:
the HTTP client stack (httpx, TLS contexts, the CA bundle) costs several MB per process, so
it is imported and built only when a request first needs it (issue 13: a worker's idle RSS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from signedjson.types import SigningKey

    from trioserver.config import FederationConfig
    from trioserver.federation.transport import FederationClient


class LazyFederationClient:
    """`trioserver.federation.transport.FederationClient`, built on first use."""

    def __init__(
        self, config: FederationConfig, *, server_name: str, signing_key: SigningKey
    ) -> None:
        self._config = config
        self._server_name = server_name
        self._signing_key = signing_key
        self._client: FederationClient | None = None

    def _real(self) -> FederationClient:
        if self._client is None:
            from trioserver.federation.transport import FederationClient

            self._client = FederationClient(
                self._config, server_name=self._server_name, signing_key=self._signing_key
            )
        return self._client

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        query: Mapping[str, str | Sequence[str]] | None = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - the transport's own deadline
    ) -> Any:
        """`FederationClient.get_json`."""
        return await self._real().get_json(
            destination, path, query=query, signed=signed, timeout=timeout
        )

    async def put_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - the transport's own deadline
    ) -> Any:
        """`FederationClient.put_json`."""
        return await self._real().put_json(
            destination, path, content, signed=signed, timeout=timeout
        )

    async def post_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 - the transport's own deadline
    ) -> Any:
        """`FederationClient.post_json`."""
        return await self._real().post_json(
            destination, path, content, signed=signed, timeout=timeout
        )

    async def aclose(self) -> None:
        """Close the pooled connections, if any were made."""
        if self._client is not None:
            await self._client.aclose()
