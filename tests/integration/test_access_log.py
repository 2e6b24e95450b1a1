"""The optional access log: `[http] log_access = true` (issue 10)."""

from __future__ import annotations

import logging
import re

import httpx
import pytest

from trioserver.testing import serve_in_process

from tests.integration.client import V3, assert_error, assert_ok

LINE = re.compile(
    r'^127\.0\.0\.1 "(?P<method>[A-Z]+) (?P<target>\S+)" (?P<status>\d{3}) [\d.]+ms$'
)


def access_lines(caplog: pytest.LogCaptureFixture) -> list[re.Match[str]]:
    records = [r for r in caplog.records if r.name == "trioserver.access"]
    assert all(r.levelno == logging.INFO for r in records)
    matches = [LINE.match(r.getMessage()) for r in records]
    assert all(matches), [r.getMessage() for r in records]
    return [m for m in matches if m is not None]


async def test_one_line_per_request_without_the_access_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="trioserver.access")
    async with serve_in_process(http={"log_access": True}) as hs:
        alice = await hs.register_user("alice")
        caplog.clear()
        async with httpx.AsyncClient(base_url=hs.base_url) as http:
            assert_ok(await http.get("/_matrix/client/versions"))
            whoami = f"{V3}/account/whoami"
            query = {"access_token": alice.access_token, "x": "1"}
            assert_ok(await http.get(whoami, params=query))
            assert_error(await http.get(f"{V3}/nope"), 404, "M_UNRECOGNIZED")
    lines = access_lines(caplog)
    assert [(m["method"], m["target"], m["status"]) for m in lines] == [
        ("GET", "/_matrix/client/versions", "200"),
        ("GET", f"{whoami}?access_token=<redacted>&x=1", "200"),
        ("GET", f"{V3}/nope", "404"),
    ]
    assert alice.access_token not in caplog.text


async def test_off_by_default(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with serve_in_process() as hs, httpx.AsyncClient(base_url=hs.base_url) as http:
        assert_ok(await http.get("/_matrix/client/versions"))
    assert not [r for r in caplog.records if r.name == "trioserver.access"]
