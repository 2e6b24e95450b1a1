"""Server ACL matching (Client-Server API, "Server Access Control Lists")."""

from __future__ import annotations

import pytest

from trioserver.federation.server_acl import server_allowed


@pytest.mark.parametrize(
    ("content", "server", "allowed"),
    [
        ({"allow": ["*"]}, "example.org", True),
        ({"allow": ["*"]}, "example.org:8448", True),  # the port is not matched
        ({}, "example.org", False),  # nothing allowed
        ({"allow": ["*"], "deny": ["evil.example"]}, "evil.example", False),
        ({"allow": ["*"], "deny": ["*.evil.example"]}, "sub.evil.example", False),
        ({"allow": ["*"], "deny": ["*.evil.example"]}, "evil.example", True),
        ({"allow": ["ex?mple.org"]}, "example.org", True),
        ({"allow": ["ex?mple.org"]}, "exaample.org", False),
        ({"allow": ["EXAMPLE.org"]}, "example.ORG", True),  # case-insensitive
        ({"allow": ["*"]}, "1.2.3.4:8448", True),
        ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4:8448", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "[::1]:8448", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "example.org", True),
        ({"allow": "*"}, "example.org", False),  # not a list: no patterns
        ({"allow": ["*", 5]}, "example.org", True),  # non-strings ignored
        ({"allow": ["*"]}, "not a server name!", False),
        ({"allow": ["a.b"], "deny": ["a.b"]}, "a.b", False),  # deny wins
    ],
)
def test_server_allowed(content: dict[str, object], server: str, allowed: bool) -> None:
    assert server_allowed(content, server) is allowed
