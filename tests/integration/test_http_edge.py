"""The HTTP edge: routing errors, JSON bodies, tokens, body size limits and CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from trioserver.testing import serve_in_process

from tests.integration.client import V3, Client, assert_error, assert_ok


def assert_cors(response: httpx.Response) -> None:
    assert response.headers["access-control-allow-origin"] == "*"
    methods = {m.strip() for m in response.headers["access-control-allow-methods"].split(",")}
    assert methods >= {"GET", "POST", "PUT", "DELETE", "OPTIONS"}
    headers = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert headers >= {"x-requested-with", "content-type", "authorization"}


@pytest.mark.parametrize(
    "path",
    ["/_matrix/client/v3/nonsense", "/nonsense", "/_matrix/client/v3/account/whoami/extra", "/"],
)
async def test_unknown_path(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert_error(response, 404, "M_UNRECOGNIZED")
    assert_cors(response)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"{V3}/login"),
        ("GET", f"{V3}/logout"),
        ("DELETE", "/_matrix/client/versions"),
        ("POST", f"{V3}/devices"),
    ],
)
async def test_wrong_method(http: httpx.AsyncClient, method: str, path: str) -> None:
    response = await http.request(method, path, json={})
    assert_error(response, 405, "M_UNRECOGNIZED")
    assert_cors(response)


@pytest.mark.parametrize("content", [b"{", b"not json", b"", b"\xff\xfe", b'{"a": NaN}'])
async def test_invalid_json(http: httpx.AsyncClient, content: bytes) -> None:
    response = await http.post(
        f"{V3}/login", content=content, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "M_NOT_JSON")
    assert_cors(response)


@pytest.mark.parametrize("content", [b"[]", b"1", b'"login"', b"null", b"true"])
async def test_json_that_is_not_an_object(http: httpx.AsyncClient, content: bytes) -> None:
    response = await http.post(
        f"{V3}/login", content=content, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "M_BAD_JSON")


async def test_missing_token(http: httpx.AsyncClient) -> None:
    response = await http.get(f"{V3}/account/whoami")
    assert_error(response, 401, "M_MISSING_TOKEN")
    assert_cors(response)


@pytest.mark.parametrize("header", ["Basic abc", "Bearer", "token"])
async def test_malformed_authorization_header(http: httpx.AsyncClient, header: str) -> None:
    response = await http.get(f"{V3}/account/whoami", headers={"Authorization": header})
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_unknown_token(http: httpx.AsyncClient) -> None:
    response = await http.get(f"{V3}/account/whoami", headers={"Authorization": "Bearer nope"})
    assert_error(response, 401, "M_UNKNOWN_TOKEN")
    response = await http.get(f"{V3}/account/whoami", params={"access_token": "nope"})
    assert_error(response, 401, "M_UNKNOWN_TOKEN")


async def test_token_in_query_parameter(alice: Client, http: httpx.AsyncClient) -> None:
    response = await http.get(f"{V3}/account/whoami", params={"access_token": alice.token})
    assert assert_ok(response)["user_id"] == alice.user_id
    response = await http.post(
        f"{V3}/user/{alice.user_id}/filter", params={"access_token": alice.token}, json={}
    )
    assert_ok(response)


async def test_bearer_scheme_is_case_insensitive(alice: Client, http: httpx.AsyncClient) -> None:
    response = await http.get(
        f"{V3}/account/whoami", headers={"Authorization": f"bearer {alice.token}"}
    )
    assert assert_ok(response)["user_id"] == alice.user_id


@pytest.mark.parametrize("prefix", ["r0", "v3"])
async def test_r0_and_v3_prefixes(alice: Client, http: httpx.AsyncClient, prefix: str) -> None:
    base = f"/_matrix/client/{prefix}"
    whoami = await http.get(f"{base}/account/whoami", headers=alice.headers)
    assert assert_ok(whoami)["user_id"] == alice.user_id
    body = {"type": "m.login.password", "user": "alice", "password": "alicepw"}
    assert assert_ok(await http.post(f"{base}/login", json=body))["user_id"] == alice.user_id
    assert_ok(await http.get(f"{base}/devices", headers=alice.headers))


async def test_head_request(http: httpx.AsyncClient) -> None:
    response = await http.head("/_matrix/client/versions")
    assert response.status_code == 200
    assert response.content == b""


async def test_cors_on_success(alice: Client) -> None:
    response = await alice.get("/account/whoami")
    assert_ok(response)
    assert_cors(response)
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "path", [f"{V3}/account/whoami", f"{V3}/login", f"{V3}/devices/ABC", "/nonsense"]
)
async def test_options_preflight(http: httpx.AsyncClient, path: str) -> None:
    response = await http.options(
        path,
        headers={
            "Origin": "https://app.element.io",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    # No token needed, and no error: browsers only proceed after a 2xx preflight.
    assert response.status_code in (200, 204), response.text
    assert_cors(response)


@pytest.fixture
async def small_limit_http() -> AsyncIterator[httpx.AsyncClient]:
    async with (
        serve_in_process(http={"max_request_body_size": 1000}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        yield http


async def test_body_over_the_limit(small_limit_http: httpx.AsyncClient) -> None:
    body = {"type": "m.login.password", "user": "alice", "password": "x" * 2000}
    response = await small_limit_http.post(f"{V3}/login", json=body)
    assert_error(response, 413, "M_TOO_LARGE")
    assert_cors(response)
    assert_ok(await small_limit_http.get("/_matrix/client/versions"))


async def test_body_over_the_limit_without_content_length(
    small_limit_http: httpx.AsyncClient,
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "m.login.password", "password": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    response = await small_limit_http.post(
        f"{V3}/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "M_TOO_LARGE")
    assert_ok(await small_limit_http.get("/_matrix/client/versions"))


async def test_body_under_the_limit(small_limit_http: httpx.AsyncClient) -> None:
    body = {"type": "m.login.password", "user": "x" * 800, "password": "pw"}
    response = await small_limit_http.post(f"{V3}/login", json=body)
    assert_error(response, 403, "M_FORBIDDEN")
    # The server keeps serving after refusing a large body.
    assert_ok(await small_limit_http.get("/_matrix/client/versions"))
