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


@attrs.define
class Client:
    """One logged-in user."""

    http: httpx.AsyncClient
    user_id: str
    token: str
    device_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

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
