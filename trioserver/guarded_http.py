"""Outbound HTTP only to addresses the configuration allows (pushers, URL previews; federation
reuses the policy and the resolver in `trioserver.federation.connections`).

A pusher's URL, or a URL to preview, is chosen by any user, so the server must not become a
way into its own network: like Synapse's ``ip_range_blacklist``, requests to loopback,
private, link-local and other special ranges are refused unless an allowlist names them
(``push.ip_range_allowlist``, ``media.url_preview_ip_range_allowlist``). The host is
resolved once, the addresses are checked, and the connection goes to a checked address (the
Host header and TLS server name stay the URL's), so a DNS answer that changes between the check
and the connection cannot slip past it.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

import httpx

import trio

if TYPE_CHECKING:
    from collections.abc import Sequence

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Never a destination, whatever the configuration says (Synapse).
_ALWAYS_BLOCKED = (ipaddress.ip_network("0.0.0.0/32"), ipaddress.ip_network("::/128"))


def parse_networks(ranges: Sequence[str]) -> list[IpNetwork]:
    """CIDR ranges (a bare address is one address).

    Raises:
        ValueError: a range that is not an IPv4 or IPv6 network.
    """
    return [ipaddress.ip_network(r, strict=False) for r in ranges]


class AddressBlocked(httpx.ConnectError):
    """The host is, or resolves only to, addresses the policy refuses.

    Attributes:
        literal: the URL named an IP address (not a host name that resolved to one).
    """

    def __init__(self, message: str, *, request: httpx.Request, literal: bool) -> None:
        super().__init__(message, request=request)
        self.literal = literal


class AddressPolicy:
    """Which addresses outbound requests may connect to."""

    def __init__(self, blocked: Sequence[IpNetwork], allowed: Sequence[IpNetwork]) -> None:
        self._blocked = list(blocked)
        self._allowed = list(allowed)

    def permits(self, address: IpAddress) -> bool:
        """Whether a connection to `address` is allowed."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in _ALWAYS_BLOCKED):
            return False
        if any(address in net for net in self._allowed):
            return True
        return not any(address in net for net in self._blocked)


async def resolve_addresses(host: str, port: int) -> list[IpAddress]:
    """The addresses `host` (a name or an IP literal) resolves to, without duplicates, in the
    resolver's order.

    Raises:
        OSError: the host does not resolve (``socket.gaierror``).

    Checkpoint: yes (a name is resolved in a thread).
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: list[IpAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def is_ip_literal(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address (without brackets), not a name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to addresses `policy` permits."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        verify_tls: bool,
        blocklist_key: str = "push.ip_range_blocklist",
        allowlist_key: str = "push.ip_range_allowlist",
    ) -> None:
        # The config keys name the setting in the refusal message, for the operator.
        self._policy = policy
        self._verify_tls = verify_tls
        self._refusal = f"is in {blocklist_key} (allow it with {allowlist_key})"
        self._inner: httpx.AsyncHTTPTransport | None = None

    def _transport(self) -> httpx.AsyncHTTPTransport:
        # Made on first use: its TLS context (the CA bundle, a few MB) is not worth keeping
        # on a server that never makes an outbound request.
        if self._inner is None:
            self._inner = httpx.AsyncHTTPTransport(verify=self._verify_tls, trust_env=False)
        return self._inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Resolve, check, and send `request` to the first permitted address.

        Raises:
            AddressBlocked: the host resolves only to refused addresses.
            httpx.ConnectError: the host does not resolve.
        """
        url = request.url
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = await resolve_addresses(url.host, port)
        except OSError as exc:  # socket.gaierror: no such host
            raise httpx.ConnectError(
                f"cannot resolve {url.host}: {exc}", request=request
            ) from None
        permitted = [a for a in addresses if self._policy.permits(a)]
        if not permitted:
            raise AddressBlocked(
                f"{url.host} {self._refusal}", request=request, literal=is_ip_literal(url.host)
            )
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": url.host}
        request.url = url.copy_with(host=str(permitted[0]))
        return await self._transport().handle_async_request(request)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._inner is not None:
            await self._inner.aclose()
