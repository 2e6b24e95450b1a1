"""The response headers of a media download or thumbnail (pure).

Uploaded bytes are served from the homeserver's own origin, so a file a user uploaded must
never run as a page there (spec "Content repository", security considerations): every
download is sandboxed by a Content-Security-Policy, sniffing is off, and only a short list of
passive types is shown ``inline``; everything else (HTML, SVG, scripts, PDFs…) is an
``attachment``. The inline list is the spec's (v1.12 "Serving inline content"), as Synapse's.
"""

from __future__ import annotations

from urllib.parse import quote

# Spec v1.11 "Content repository": the policy every media response carries.
CONTENT_SECURITY_POLICY = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf;"
    " style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)
# Media never changes once uploaded, so a browser may keep it a day; but a shared cache must
# not (s-maxage=0, proxy-revalidate): it would serve an authenticated download to requests
# without a token. As Synapse, with a constant ETag so a browser revalidates with a 304.
CACHE_CONTROL = "public,max-age=86400,s-maxage=0,proxy-revalidate"
ETAG = "1"

# Types shown in the browser rather than downloaded: passive formats only (SVG can carry
# script, so it is deliberately absent).
INLINE_TYPES = frozenset(
    {
        "text/css",
        "text/plain",
        "text/csv",
        "application/json",
        "application/ld+json",
        "image/jpeg",
        "image/gif",
        "image/png",
        "image/apng",
        "image/webp",
        "image/avif",
        "video/mp4",
        "video/webm",
        "video/ogg",
        "video/quicktime",
        "audio/mp4",
        "audio/webm",
        "audio/aac",
        "audio/mpeg",
        "audio/ogg",
        "audio/wave",
        "audio/wav",
        "audio/x-wav",
        "audio/x-pn-wav",
        "audio/flac",
        "audio/x-flac",
    }
)

# Textual types served with "; charset=UTF-8" when the uploader gave no charset.
TEXT_TYPES = frozenset(
    {
        "text/css",
        "text/csv",
        "text/html",
        "text/calendar",
        "text/plain",
        "text/javascript",
        "application/json",
        "application/ld+json",
        "application/rtf",
        "image/svg+xml",
        "text/xml",
    }
)

# RFC 2616 separators: a filename containing one cannot be a bare token.
_SEPARATORS = frozenset('()<>@,;:\\"/[]?={}')


def essence(content_type: str) -> str:
    """The type without parameters, lower-cased (``Text/Plain; charset=x`` -> ``text/plain``)."""
    return content_type.split(";", 1)[0].strip().lower()


def served_content_type(content_type: str) -> str:
    """The Content-Type to send: as uploaded, with a UTF-8 charset for bare text types."""
    if content_type.strip().lower() in TEXT_TYPES:
        return f"{content_type}; charset=UTF-8"
    return content_type


def is_inline(content_type: str) -> bool:
    """Whether a browser may show this type in place (see `INLINE_TYPES`)."""
    return essence(content_type) in INLINE_TYPES


def _is_token(name: str) -> bool:
    return all(32 < ord(c) < 127 and c not in _SEPARATORS for c in name)


def content_disposition(content_type: str, filename: str | None) -> str:
    """``inline`` or ``attachment``, with the file name per RFC 6266.

    A name that is a plain RFC 2616 token goes as ``filename=name``; any other (spaces,
    quotes, non-ASCII, control characters) as RFC 5987 ``filename*=utf-8''<percent-encoded>``,
    so that no quote, CR or LF from a user's file name ever reaches the header raw.
    """
    disposition = "inline" if is_inline(content_type) else "attachment"
    if not filename:
        return disposition
    if _is_token(filename):
        return f"{disposition}; filename={filename}"
    return f"{disposition}; filename*=utf-8''{quote(filename.encode('utf-8'), safe='')}"


def media_headers(content_type: str, filename: str | None) -> tuple[tuple[str, str], ...]:
    """Every header of a media response except Content-Type and Content-Length."""
    return (
        ("Content-Disposition", content_disposition(content_type, filename)),
        ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        # The same for browsers that only know the older header name.
        ("X-Content-Security-Policy", "sandbox;"),
        ("X-Content-Type-Options", "nosniff"),
        ("Cross-Origin-Resource-Policy", "cross-origin"),
        ("Referrer-Policy", "no-referrer"),
        ("Cache-Control", CACHE_CONTROL),
        ("ETag", ETAG),
        ("X-Robots-Tag", "noindex, nofollow, noarchive, noimageindex"),
    )
