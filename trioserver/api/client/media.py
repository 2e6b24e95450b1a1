"""The content repository routes (spec "Content repository", v1.11 authenticated media).

Uploads: ``POST /_matrix/media/v3/upload`` (and r0), ``POST /_matrix/media/v1/create`` and
``PUT /_matrix/media/v3/upload/{serverName}/{mediaId}``; their bodies are streamed to disk.

Downloads: ``/_matrix/client/v1/media/{download,thumbnail,config}`` need an access token.
The legacy unauthenticated ``/_matrix/media/(v3|r0)/{download,thumbnail}`` serve only media
created before ``media.unauthenticated_media_before_ts`` (by default none: 404, as Synapse
with authenticated media on); legacy ``/config`` needs an access token, as in Synapse.
Every media response is streamed from its file with the headers of `trioserver.media.headers`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from trioserver.api.http import JsonDict, Request, Response, Route, route
from trioserver.api.params import query_bool, query_int
from trioserver.errors import MatrixError
from trioserver.handlers.media import (
    DEFAULT_TIMEOUT_MS,
    MAX_TIMEOUT_MS,
    ServableMedia,
    not_found,
    parse_content_type,
)
from trioserver.media.filestore import open_chunks
from trioserver.media.headers import CACHE_CONTROL, ETAG, media_headers, served_content_type

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from trioserver.api.deps import ApiDeps

# v1 too: old clients still use /_matrix/media/v1/download and friends (Synapse serves them).
MEDIA_LEGACY = "/_matrix/media/(?:v3|r0|v1)"
MEDIA_V1 = "/_matrix/media/v1"
CLIENT_MEDIA = "/_matrix/client/v1/media"


def _body_chunks(request: Request) -> AsyncIterator[bytes]:
    # A body="stream" route: the chunks as they arrive (the edge does not read them).
    stream = request.body_stream
    assert stream is not None, "media upload routes are declared body='stream'"
    return stream


def _upload_name(request: Request) -> str | None:
    name = request.query_param("filename")
    # The query string is decoded as UTF-8 with replacement characters: one here means the
    # client sent bytes that are not UTF-8 (Synapse refuses those too).
    if name is not None and "\ufffd" in name:
        raise MatrixError("M_INVALID_PARAM", "Invalid UTF-8 filename parameter")
    return name or None


async def upload(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /upload: store the body; ``{"content_uri": "mxc://…"}``."""
    media = deps.media
    media.check_declared_length(request.headers)
    content_type = parse_content_type(request.headers)
    deps.ratelimits.media_upload.check(request.requester.user_id)
    uri = await media.upload(
        request.requester.user_id, content_type, _upload_name(request), _body_chunks(request)
    )
    return {"content_uri": uri}


async def create(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /v1/create: reserve a media id for a later PUT."""
    deps.ratelimits.media_upload.check(request.requester.user_id)
    uri, expires_ts = await deps.media.create(request.requester.user_id)
    return {"content_uri": uri, "unused_expires_at": expires_ts}


async def upload_to(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /upload/{serverName}/{mediaId}: the content of an id from /create."""
    media = deps.media
    # Whose id it is comes first (403/404/409 before 413), as in Synapse.
    await media.check_can_upload_to(
        request.requester.user_id,
        request.path_params["serverName"],
        request.path_params["mediaId"],
    )
    media.check_declared_length(request.headers)
    content_type = parse_content_type(request.headers)
    deps.ratelimits.media_upload.check(request.requester.user_id)
    await media.upload_to(
        request.requester.user_id,
        request.path_params["mediaId"],
        content_type,
        _upload_name(request),
        _body_chunks(request),
    )
    return {}


async def _file_response(
    path: Path, length: int, content_type: str, filename: str | None
) -> Response:
    try:
        chunks = await open_chunks(path)
    except FileNotFoundError:
        # The row is there but the file is not (removed by hand, a restore of the database
        # without its media): not found, rather than a response cut short.
        raise not_found() from None
    return Response(
        stream=chunks,
        content_length=length,
        content_type=served_content_type(content_type),
        headers=media_headers(content_type, filename),
    )


async def _servable(deps: ApiDeps, request: Request, *, legacy: bool) -> ServableMedia:
    timeout_ms = query_int(request, "timeout_ms", DEFAULT_TIMEOUT_MS, maximum=MAX_TIMEOUT_MS)
    return await deps.media.get_local(
        request.path_params["serverName"],
        request.path_params["mediaId"],
        timeout_ms=timeout_ms,
        legacy=legacy,
    )


def _not_modified(request: Request) -> Response | None:
    # Media never changes, so a browser revalidating its copy (after the access checks have
    # passed) needs no body.
    if request.headers.get("if-none-match", "").strip() != ETAG:
        return None
    return Response(
        status=304, raw=b"", headers=(("Cache-Control", CACHE_CONTROL), ("ETag", ETAG))
    )


async def _download(deps: ApiDeps, request: Request, *, legacy: bool) -> Response:
    media = await _servable(deps, request, legacy=legacy)
    not_modified = _not_modified(request)
    if not_modified is not None:
        return not_modified
    # The {fileName} path segment overrides the uploaded name (spec).
    filename = request.path_params.get("fileName") or media.row.upload_name
    return await _file_response(media.path, media.length, media.content_type, filename)


async def download(deps: ApiDeps, request: Request) -> Response:
    """GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]."""
    return await _download(deps, request, legacy=False)


async def legacy_download(deps: ApiDeps, request: Request) -> Response:
    """GET /_matrix/media/v3/download/…: only media from before the freeze."""
    return await _download(deps, request, legacy=True)


def _dimension(request: Request, name: str) -> int:
    if request.query_param(name) is None:
        raise MatrixError("M_MISSING_PARAM", f"Missing integer query parameter '{name}'")
    return query_int(request, name, 0, minimum=1)


def _method(request: Request) -> Literal["crop", "scale"]:
    raw = request.query_param("method")
    if raw is None or raw == "scale":
        return "scale"
    if raw == "crop":
        return "crop"
    raise MatrixError("M_INVALID_PARAM", "Query parameter 'method' must be one of: crop, scale")


async def _thumbnail(deps: ApiDeps, request: Request, *, legacy: bool) -> Response:
    # Parameters first: a bad request is 400 whatever the media (as Synapse).
    width, height = _dimension(request, "width"), _dimension(request, "height")
    method = _method(request)
    animated = query_bool(request, "animated", False)
    media = await _servable(deps, request, legacy=legacy)
    not_modified = _not_modified(request)
    if not_modified is not None:
        return not_modified
    thumbnail = await deps.media.thumbnail(
        media, width=width, height=height, method=method, animated=animated
    )
    if thumbnail is None:
        # Spec: 400 when the server cannot thumbnail the content (Synapse: M_UNKNOWN).
        raise MatrixError("M_UNKNOWN", "Cannot generate thumbnails for the requested content")
    return await _file_response(thumbnail.path, thumbnail.length, thumbnail.content_type, None)


async def thumbnail(deps: ApiDeps, request: Request) -> Response:
    """GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}."""
    return await _thumbnail(deps, request, legacy=False)


async def legacy_thumbnail(deps: ApiDeps, request: Request) -> Response:
    """GET /_matrix/media/v3/thumbnail/…: only media from before the freeze."""
    return await _thumbnail(deps, request, legacy=True)


async def config(deps: ApiDeps, request: Request) -> JsonDict:
    """GET …/config: the upload size limit."""
    return {"m.upload.size": deps.media.config.max_upload_size}


_ID = "{serverName}/{mediaId}"

ROUTES: list[Route[ApiDeps]] = [
    route("POST", f"{MEDIA_LEGACY}/upload", upload, auth="required", body="stream", local=True),
    route("POST", f"{MEDIA_V1}/create", create, auth="required", local=True),
    route(
        "PUT",
        f"/_matrix/media/v3/upload/{_ID}",
        upload_to,
        auth="required",
        body="stream",
        local=True,
    ),
    route("GET", f"{CLIENT_MEDIA}/download/{_ID}", download, auth="required", guest=True),
    # {fileName:opt}: a trailing slash (an empty name) is the same as none, as in Synapse.
    route(
        "GET",
        f"{CLIENT_MEDIA}/download/{_ID}/{{fileName:opt}}",
        download,
        auth="required",
        guest=True,
    ),
    route("GET", f"{CLIENT_MEDIA}/thumbnail/{_ID}", thumbnail, auth="required", guest=True),
    route("GET", f"{CLIENT_MEDIA}/config", config, auth="required", guest=True),
    route("GET", f"{MEDIA_LEGACY}/download/{_ID}", legacy_download, auth="none"),
    route("GET", f"{MEDIA_LEGACY}/download/{_ID}/{{fileName:opt}}", legacy_download, auth="none"),
    route("GET", f"{MEDIA_LEGACY}/thumbnail/{_ID}", legacy_thumbnail, auth="none"),
    route("GET", f"{MEDIA_LEGACY}/config", config, auth="required", guest=True),
]
