"""A thin Matrix client for tests: an authenticated httpx client plus assertion helpers."""

from __future__ import annotations

from typing import Any

import attrs
import httpx

V3 = "/_matrix/client/v3"


def assert_error(response: httpx.Response, status: int, errcode: str) -> dict[str, Any]:
    """Assert a Matrix error response and return its body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["errcode"] == errcode, body
    assert isinstance(body["error"], str)
    return body


def assert_ok(response: httpx.Response) -> dict[str, Any]:
    """Assert a 200 JSON response and return its body."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def assert_uia(response: httpx.Response, stages: list[str]) -> dict[str, Any]:
    """Assert a 401 user-interactive-auth response offering one flow of `stages`."""
    assert response.status_code == 401, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["session"], str)
    assert body["session"]
    assert body["flows"] == [{"stages": stages}], body
    assert isinstance(body["params"], dict)
    return body


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for an access token."""
    return {"Authorization": f"Bearer {token}"}


def password_auth(user: str, password: str, session: str | None) -> dict[str, Any]:
    """A UIA ``m.login.password`` stage."""
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        "session": session,
    }


async def login(http: httpx.AsyncClient, user: str, password: str, **extra: Any) -> httpx.Response:
    """POST /login with m.login.password and an ``m.id.user`` identifier."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user},
        "password": password,
        **extra,
    }
    return await http.post(f"{V3}/login", json=body)


async def register(http: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """POST /register through the m.login.dummy flow; the response of the second step."""
    first = await http.post(f"{V3}/register", json=body)
    session = assert_uia(first, ["m.login.dummy"])["session"]
    auth = {"type": "m.login.dummy", "session": session}
    return await http.post(f"{V3}/register", json={**body, "auth": auth})


@attrs.define
class Client:
    """One logged-in user."""

    http: httpx.AsyncClient
    user_id: str
    token: str
    device_id: str

    @classmethod
    async def login(
        cls, http: httpx.AsyncClient, user: str, password: str, **extra: Any
    ) -> Client:
        """Log in with a password and return the new session."""
        body = assert_ok(await login(http, user, password, **extra))
        return cls(http, body["user_id"], body["access_token"], body["device_id"])

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.token)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(V3 + path, headers=self.headers, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return await self.http.post(V3 + path, json=json, headers=self.headers, **kwargs)

    async def put(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return await self.http.put(V3 + path, json=json, headers=self.headers, **kwargs)

    async def delete(self, path: str, json: Any = None, **kwargs: Any) -> httpx.Response:
        return await self.http.request(
            "DELETE", V3 + path, json=json, headers=self.headers, **kwargs
        )

    async def is_logged_in(self) -> bool:
        """Whether the access token still works (whoami), failing on anything but 200/401."""
        response = await self.get("/account/whoami")
        if response.status_code == 401:
            assert_error(response, 401, "M_UNKNOWN_TOKEN")
            return False
        assert_ok(response)
        return True

    async def with_password_uia(
        self, method: str, path: str, body: dict[str, Any], password: str
    ) -> httpx.Response:
        """Make a UIA request: the first attempt must be refused with 401 offering
        m.login.password; the second carries the password. Returns the second response."""
        first = await self.http.request(method, V3 + path, json=body, headers=self.headers)
        session = assert_uia(first, ["m.login.password"])["session"]
        auth = password_auth(self.user_id, password, session)
        return await self.http.request(
            method, V3 + path, json={**body, "auth": auth}, headers=self.headers
        )
