"""Helpers for the media tests: upload, parse mxc URIs, the endpoints' paths."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.client import Client, assert_ok

UPLOAD = "/_matrix/media/v3/upload"
CREATE = "/_matrix/media/v1/create"
CLIENT_MEDIA = "/_matrix/client/v1/media"
LEGACY = "/_matrix/media/v3"


async def call(
    client: Client, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    """A request to a full path (media is not under /_matrix/client/v3) as `client`."""
    return await client.http.request(
        method, path, headers={**client.headers, **(headers or {})}, **kwargs
    )


def split_mxc(uri: str) -> tuple[str, str]:
    """``mxc://server/id`` -> (server, id)."""
    assert uri.startswith("mxc://"), uri
    server, _, media_id = uri.removeprefix("mxc://").partition("/")
    return server, media_id


async def upload(
    client: Client,
    data: bytes,
    content_type: str | None = "application/octet-stream",
    filename: str | None = None,
) -> str:
    """POST /upload; the ``content_uri``."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    params = {} if filename is None else {"filename": filename}
    response = await call(client, "POST", UPLOAD, headers, content=data, params=params)
    body = assert_ok(response)
    uri: str = body["content_uri"]
    return uri


def download_path(uri: str, *, legacy: bool = False, filename: str | None = None) -> str:
    """The download URL path of `uri`."""
    server, media_id = split_mxc(uri)
    base = f"{LEGACY}/download" if legacy else f"{CLIENT_MEDIA}/download"
    path = f"{base}/{server}/{media_id}"
    return path if filename is None else f"{path}/{filename}"


def thumbnail_path(uri: str, *, legacy: bool = False) -> str:
    """The thumbnail URL path of `uri`."""
    server, media_id = split_mxc(uri)
    base = f"{LEGACY}/thumbnail" if legacy else f"{CLIENT_MEDIA}/thumbnail"
    return f"{base}/{server}/{media_id}"


async def create(client: Client) -> dict[str, Any]:
    """POST /create; its body."""
    return assert_ok(await call(client, "POST", CREATE))


def put_path(uri: str) -> str:
    """The ``PUT /upload/{server}/{id}`` path of `uri`."""
    server, media_id = split_mxc(uri)
    return f"{UPLOAD}/{server}/{media_id}"
