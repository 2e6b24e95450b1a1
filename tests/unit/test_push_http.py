"""Which addresses pushers may connect to (`push.ip_range_blocklist` / `_allowlist`)."""

from __future__ import annotations

import ipaddress

import pytest

from trioserver.config import DEFAULT_PUSH_BLOCKLIST
from trioserver.guarded_http import AddressPolicy, parse_networks

DEFAULT = AddressPolicy(parse_networks(DEFAULT_PUSH_BLOCKLIST), [])


@pytest.mark.parametrize(
    ("address", "permitted"),
    [
        ("93.184.216.34", True),
        ("2606:2800:220:1:248:1893:25c8:1946", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.10", False),
        ("169.254.169.254", False),  # cloud metadata
        ("::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("0.0.0.0", False),
    ],
)
def test_the_default_blocks_internal_addresses(address: str, permitted: bool) -> None:
    assert DEFAULT.permits(ipaddress.ip_address(address)) is permitted


def test_the_allowlist_wins_except_for_unspecified_addresses() -> None:
    policy = AddressPolicy(
        parse_networks(DEFAULT_PUSH_BLOCKLIST), parse_networks(["127.0.0.1", "0.0.0.0/0"])
    )
    assert policy.permits(ipaddress.ip_address("127.0.0.1"))
    assert not policy.permits(ipaddress.ip_address("0.0.0.0"))
    assert not policy.permits(ipaddress.ip_address("::"))
    nothing_blocked = AddressPolicy([], [])
    assert nothing_blocked.permits(ipaddress.ip_address("127.0.0.1"))
