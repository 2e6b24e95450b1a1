"""How a media response describes its file (pure: `trioserver.media.headers`)."""

from __future__ import annotations

import pytest

from trioserver.media.headers import content_disposition, is_inline, served_content_type


@pytest.mark.parametrize(
    ("content_type", "inline"),
    [
        ("image/png", True),
        ("IMAGE/PNG", True),
        ("image/jpeg; foo=bar", True),
        ("video/webm", True),
        ("audio/flac", True),
        ("text/plain", True),
        ("text/html", False),
        ("image/svg+xml", False),
        ("application/pdf", False),
        ("application/octet-stream", False),
        ("text/javascript", False),
        ("", False),
    ],
)
def test_only_passive_types_are_inline(content_type: str, inline: bool) -> None:
    assert is_inline(content_type) is inline


@pytest.mark.parametrize(
    ("name", "header"),
    [
        (None, "attachment"),
        ("", "attachment"),
        ("plain.txt", "attachment; filename=plain.txt"),
        ("a b", "attachment; filename*=utf-8''a%20b"),
        ('x"y', "attachment; filename*=utf-8''x%22y"),
        ("x\r\ny", "attachment; filename*=utf-8''x%0D%0Ay"),
        ("ä/ö", "attachment; filename*=utf-8''%C3%A4%2F%C3%B6"),
        ("tab\t", "attachment; filename*=utf-8''tab%09"),
        ("del\x7f", "attachment; filename*=utf-8''del%7F"),
    ],
)
def test_file_names_are_tokens_or_rfc5987(name: str | None, header: str) -> None:
    assert content_disposition("application/zip", name) == header


def test_text_types_get_a_utf8_charset_unless_they_have_one() -> None:
    assert served_content_type("text/plain") == "text/plain; charset=UTF-8"
    assert served_content_type("image/svg+xml") == "image/svg+xml; charset=UTF-8"
    assert served_content_type("text/plain; charset=latin1") == "text/plain; charset=latin1"
    assert served_content_type("image/png") == "image/png"
