"""OpenGraph data from HTML (`trioserver.media.preview.opengraph`): pure, no I/O."""

from __future__ import annotations

import pytest

from trioserver.media.preview.opengraph import (
    DESCRIPTION_MAXLEN,
    MAX_OG_TAGS,
    OG_TAG_VALUE_MAXLEN,
    is_html,
    parse_open_graph,
)

URL = "https://example.org/blog/post.html"


def og(html: str | bytes, content_type: str = "text/html", url: str = URL) -> dict[str, object]:
    body = html.encode() if isinstance(html, str) else html
    return parse_open_graph(body, url, content_type)


def test_og_tags_win_over_fallbacks() -> None:
    page = """<html><head><title>Page title</title>
    <meta name="description" content="meta description">
    <meta property="og:title" content="OG title">
    <meta property="og:description" content="OG description">
    <meta property="og:image" content="https://cdn.example.org/a.jpg">
    <meta property="og:type" content="article">
    </head><body><img src="/big.png" width="500" height="500"></body></html>"""
    assert og(page) == {
        "og:title": "OG title",
        "og:description": "OG description",
        "og:image": "https://cdn.example.org/a.jpg",
        "og:type": "article",
    }


def test_first_of_repeated_og_tags_wins() -> None:
    page = '<meta property="og:image" content="/1.png"><meta property="og:image" content="/2.png">'
    assert og(page)["og:image"] == "https://example.org/1.png"


def test_title_description_and_image_fallbacks() -> None:
    page = """<!doctype html><html><head>
    <title>  Tab
      title </title><meta name="Description" content="Said  in   meta">
    <link rel="shortcut icon" href="/favicon.ico">
    </head><body><h1>Heading</h1>
    <img src="small.png" width="5" height="5">
    <img src="wide.png" width="300" height="20">
    <img src="tall.png" width="100" height="100">
    </body></html>"""
    assert og(page) == {
        "og:title": "Tab title",
        "og:description": "Said in meta",
        "og:image": "https://example.org/blog/tall.png",
    }


def test_heading_and_text_when_there_is_no_title() -> None:
    page = """<body><nav>Home | About</nav><header>Site banner</header>
    <script>var x = "not text";</script><style>p { color: red }</style>
    <h2>Second-level heading</h2><p>The first paragraph &amp; more.</p>
    <footer>Copyright</footer></body>"""
    assert og(page) == {
        "og:title": "Second-level heading",
        "og:description": "Second-level heading The first paragraph & more.",
    }


def test_image_fallback_order() -> None:
    assert og('<meta itemprop="image" content="/item.png"><img src="/img.png">')["og:image"] == (
        "https://example.org/item.png"
    )
    assert og('<img src="/unsized.png"><img src="/also.png">')["og:image"] == (
        "https://example.org/unsized.png"
    )
    assert og('<link rel="icon" href="//static.example.org/i.ico">')["og:image"] == (
        "https://static.example.org/i.ico"
    )
    assert "og:image" not in og("<p>nothing</p>")


def test_og_image_made_absolute_against_the_final_url() -> None:
    page = '<meta property="og:image" content="../img/x.png">'
    assert og(page, url="http://other.example/a/b/c")["og:image"] == (
        "http://other.example/a/img/x.png"
    )
    for image in ("data:image/png;base64,AAAA", "javascript:alert(1)", "ftp://h/x.png"):
        assert "og:image" not in og(f'<meta property="og:image" content="{image}">')


def test_long_text_is_summarised_at_a_word() -> None:
    page = "<p>" + "lorem ipsum " * 200 + "</p>"
    description = og(page)["og:description"]
    assert isinstance(description, str)
    assert len(description) <= DESCRIPTION_MAXLEN
    assert description.endswith("…")
    assert description[:-1].split()[-1] in ("lorem", "ipsum")


def test_values_and_tag_counts_are_bounded() -> None:
    long_value = "x" * (OG_TAG_VALUE_MAXLEN + 1)
    long_name = "og:" + "n" * 60
    page = (
        f'<meta property="og:title" content="{long_value}">'
        f'<meta property="{long_name}" content="v">'
        + "".join(f'<meta property="og:k{i}" content="v">' for i in range(MAX_OG_TAGS + 20))
        + f"<title>{long_value}</title>"
    )
    result = og(page)
    assert "og:title" not in result or len(str(result["og:title"])) <= OG_TAG_VALUE_MAXLEN
    assert long_name not in result
    assert len([k for k in result if k.startswith("og:k")]) <= MAX_OG_TAGS


def test_empty_and_odd_markup() -> None:
    assert og(b"") == {}
    assert og("<html><head></head><body></body></html>") == {}
    # Unclosed and stray tags, unquoted attributes, a missing </head>.
    page = "<html><head><title>T</title><body></div><p>Text<p>More <b>bold</i>"
    assert og(page) == {"og:title": "T", "og:description": "Text More bold"}
    # An empty og: value does not hide the fallback.
    assert og('<meta property="og:title" content=""><title>Fallback</title>') == {
        "og:title": "Fallback"
    }


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("<title>Café</title>".encode("iso-8859-1"), "text/html; charset=ISO-8859-1"),
        ("<title>Café</title>".encode("iso-8859-1"), 'text/html; charset="latin1"'),
        ('<meta charset="windows-1252"><title>Café</title>'.encode("cp1252"), "text/html"),
        (
            '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
            "<title>Café</title>".encode("iso-8859-1"),
            "text/html",
        ),
        ('<?xml version="1.0" encoding="iso-8859-1"?><title>Café</title>'.encode("latin-1"), ""),
        ("\ufeff<title>Café</title>".encode(), "text/html"),
        ("\ufeff<title>Café</title>".encode("utf-16"), "text/html"),
        ("<title>Café</title>".encode(), "text/html"),
        ("<title>Café</title>".encode(), "text/html; charset=no-such-charset"),
    ],
)
def test_charsets(body: bytes, content_type: str) -> None:
    assert og(body, content_type)["og:title"] == "Café"


def test_undecodable_bytes_are_replaced() -> None:
    assert og(b"<title>bad \xff\xfe bytes</title>", "text/html; charset=utf-8") == {
        "og:title": "bad \ufffd\ufffd bytes"
    }


def test_entities_are_decoded() -> None:
    assert og("<title>Tom &amp; Jerry &#8212; &quot;live&quot;</title>") == {
        "og:title": 'Tom & Jerry — "live"'
    }


def test_is_html() -> None:
    assert is_html("text/html; charset=utf-8")
    assert is_html("application/xhtml+xml")
    assert is_html("TEXT/HTML")
    assert not is_html("text/plain")
    assert not is_html("image/svg+xml")
