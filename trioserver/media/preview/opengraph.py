"""OpenGraph data from an HTML page, with a real HTML parser (pure: no I/O, no trio).

Theory of operation
-------------------
`parse_open_graph(body, url, content_type)` decodes the page and walks it once with the
stdlib `html.parser.HTMLParser`, noting what a preview needs:

- every ``<meta property="og:…" content="…">`` (at most `MAX_OG_TAGS`; Synapse's rule);
- fallbacks, used only when the page has no og: value for them, in Synapse's order: the
  title from ``<title>`` (else the first ``<h1>``/``<h2>``/``<h3>``), the description from
  ``<meta name="description">`` (else a summary of the page's visible text), the image from
  ``<meta itemprop="image">``, else the largest ``<img>`` with a width and height over 10,
  else the first ``<img>``, else the favicon ``<link rel="icon">``.

``og:image`` is made absolute against the page's final URL. Every value is bounded: a tag
whose name exceeds `OG_TAG_NAME_MAXLEN` or value `OG_TAG_VALUE_MAXLEN` characters is dropped,
the text summary is at most `DESCRIPTION_MAXLEN` characters, and the parser stops collecting
text once it has enough. The charset comes from the Content-Type header, else a byte order
mark, else ``<meta charset>`` or ``<meta http-equiv="Content-Type">`` (found by the same
parser, over the start of the page decoded as Latin-1), else UTF-8.
"""

from __future__ import annotations

import codecs
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

# Synapse's bounds on what a preview may contain.
OG_TAG_NAME_MAXLEN = 50
OG_TAG_VALUE_MAXLEN = 1000
MAX_OG_TAGS = 50
# A description made from the page's text (Synapse: paragraphs summarised to 500 chars).
DESCRIPTION_MAXLEN = 500
# Where a <meta charset> may be looked for (HTML requires it in the first 1024 bytes).
_CHARSET_SCAN_BYTES = 4096
# Text inside these is not shown to a reader, so it does not describe the page.
_HIDDEN_TEXT = frozenset(
    {"script", "style", "noscript", "template", "head", "header", "nav", "aside", "footer"}
)
_HEADINGS = ("h1", "h2", "h3")
# Elements that never have an end tag (a start tag must not count as entering them).
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
     "track", "wbr"}
)  # fmt: skip


def is_html(content_type: str) -> bool:
    """Whether a Content-Type is an HTML page (as Synapse: text/html or XHTML)."""
    return content_type.lower().startswith(("text/html", "application/xhtml"))


def parse_open_graph(body: bytes, url: str, content_type: str) -> dict[str, Any]:
    """The OpenGraph object of an HTML page.

    Args:
        body: the page as fetched (already bounded by the fetch's size cap).
        url: the page's final URL (after redirects), for making ``og:image`` absolute.
        content_type: the response's Content-Type header.

    Returns:
        ``og:*`` keys to strings; empty when the page has nothing to show.
    """
    text = body.decode(_charset(body, content_type), errors="replace")
    collector = _PageCollector()
    collector.feed(text)
    collector.close()
    return _bounded(_open_graph(collector, url))


def _open_graph(page: _PageCollector, url: str) -> dict[str, str]:
    og = dict(page.og)
    if not og.get("og:title"):
        title = page.title if page.title is not None else page.first_heading
        if title:
            og["og:title"] = title
    if not og.get("og:description"):
        description = page.meta_description or _summary(page.text)
        if description:
            og["og:description"] = description
    if not og.get("og:image"):
        image = page.fallback_image()
        if image:
            og["og:image"] = image
    if og.get("og:image"):
        absolute = urljoin(url, og["og:image"])
        if urlsplit(absolute).scheme in ("http", "https"):
            og["og:image"] = absolute
        else:
            del og["og:image"]  # data: and the like: nothing we fetch
    return og


def _bounded(og: dict[str, str]) -> dict[str, Any]:
    return {
        k: v
        for k, v in og.items()
        if len(k) <= OG_TAG_NAME_MAXLEN and len(v) <= OG_TAG_VALUE_MAXLEN
    }


def _summary(parts: list[str]) -> str:
    """The page's visible text, whitespace collapsed, cut at a word to the length limit."""
    text = " ".join(" ".join(parts).split())
    if len(text) <= DESCRIPTION_MAXLEN:
        return text
    cut = text[: DESCRIPTION_MAXLEN - 1]
    if " " in cut:
        cut = cut.rsplit(" ", 1)[0]
    return cut + "…"


def _charset(body: bytes, content_type: str) -> str:
    for candidate in (
        _header_charset(content_type),
        _bom_charset(body),
        _meta_charset(body[:_CHARSET_SCAN_BYTES]),
    ):
        if candidate is not None and _known_codec(candidate):
            return candidate
    return "utf-8"


def _known_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except LookupError:
        return False
    return True


def _header_charset(content_type: str) -> str | None:
    # Content-Type: text/html; charset="iso-8859-1"
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None


def _bom_charset(body: bytes) -> str | None:
    if body.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return None


def _meta_charset(head: bytes) -> str | None:
    finder = _CharsetFinder()
    # Latin-1 maps every byte to one character, so ASCII markup reads the same whatever the
    # real encoding (UTF-16 pages carry a BOM, handled before this).
    finder.feed(head.decode("latin-1"))
    return finder.charset


class _CharsetFinder(HTMLParser):
    """Finds ``<meta charset>``, ``<meta http-equiv=content-type>`` or ``<?xml encoding?>``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charset: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.charset is not None or tag != "meta":
            return
        values = {k: v or "" for k, v in attrs}
        if values.get("charset"):
            self.charset = values["charset"].strip()
        elif values.get("http-equiv", "").lower() == "content-type":
            self.charset = _header_charset(values.get("content", ""))

    def handle_pi(self, data: str) -> None:
        # <?xml version="1.0" encoding="windows-1252"?>
        if self.charset is None and data.startswith("xml"):
            for part in data.rstrip("?").split()[1:]:
                key, _, value = part.partition("=")
                if key == "encoding":
                    self.charset = value.strip("\"'") or None


class _PageCollector(HTMLParser):
    """One pass over a page, keeping only what `_open_graph` needs (bounded)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.first_heading: str | None = None
        self.meta_description: str | None = None
        self.meta_image: str | None = None
        self.images: list[tuple[str, float]] = []  # (src, area or 0 when not sized)
        self.favicon: str | None = None
        self.text: list[str] = []
        self._text_length = 0
        self._open: list[str] = []  # the stack of open elements
        self._hidden_depth = 0  # how many open elements hide their text
        self._capture: str | None = None  # "title" or a heading, while inside it
        self._captured: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: (v or "") for k, v in attrs}
        if tag == "meta":
            self._meta(values)
        elif tag == "img":
            self._img(values)
        elif tag == "link":
            rels = values.get("rel", "").lower().split()
            if "icon" in rels and values.get("href") and self.favicon is None:
                self.favicon = values["href"]
        if tag in _VOID:
            return
        if tag == "body" and "head" in self._open:
            self.handle_endtag("head")  # </head> may be left out (HTML "optional tags")
        self._open.append(tag)
        if tag in _HIDDEN_TEXT or tag == "title":
            self._hidden_depth += 1
        if self._capture is None and (
            (tag == "title" and self.title is None)
            or (tag in _HEADINGS and self.first_heading is None)
        ):
            self._capture, self._captured = tag, []

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <meta ... />, <img ... />: never entered.
        values = {k: (v or "") for k, v in attrs}
        if tag == "meta":
            self._meta(values)
        elif tag == "img":
            self._img(values)
        elif tag == "link":
            rels = values.get("rel", "").lower().split()
            if "icon" in rels and values.get("href") and self.favicon is None:
                self.favicon = values["href"]

    def handle_endtag(self, tag: str) -> None:
        if tag not in self._open:
            return  # a stray end tag
        # Close everything up to the matching element (browsers do the same for bad nesting).
        while self._open:
            closed = self._open.pop()
            if closed in _HIDDEN_TEXT or closed == "title":
                self._hidden_depth -= 1
            if closed == self._capture:
                self._finish_capture(closed)
            if closed == tag:
                break

    def handle_data(self, data: str) -> None:
        if self._capture is not None and sum(map(len, self._captured)) < OG_TAG_VALUE_MAXLEN:
            self._captured.append(data)
        if self._hidden_depth == 0 and self._text_length <= 2 * DESCRIPTION_MAXLEN:
            stripped = data.strip()
            if stripped:
                self.text.append(stripped)
                self._text_length += len(stripped) + 1

    def fallback_image(self) -> str | None:
        """The image to show when the page names none (Synapse's order)."""
        if self.meta_image:
            return self.meta_image
        sized = [(area, src) for src, area in self.images if area > 0]
        if sized:
            # The largest; the first of equals.
            return max(sized, key=lambda pair: pair[0])[1]
        if self.images:
            return self.images[0][0]
        return self.favicon

    def _finish_capture(self, tag: str) -> None:
        text = " ".join("".join(self._captured).split())
        self._capture = None
        if tag == "title":
            self.title = text
        elif text:
            self.first_heading = text

    def _meta(self, values: dict[str, str]) -> None:
        content = values.get("content")
        if content is None:
            return
        prop = values.get("property", "")
        if prop.startswith("og:"):
            # ogp.me: of repeated tags, "the first tag (from top to bottom) is given
            # preference".
            if prop not in self.og and len(self.og) < MAX_OG_TAGS and content.strip():
                self.og[prop] = content.strip()
        elif not content.strip():
            return
        elif values.get("name", "").lower() == "description":
            self.meta_description = self.meta_description or " ".join(content.split())
        elif values.get("itemprop", "").lower() == "image":
            self.meta_image = self.meta_image or content.strip()

    def _img(self, values: dict[str, str]) -> None:
        src = values.get("src", "").strip()
        if not src or len(self.images) >= 1000:
            return
        width, height = _number(values.get("width")), _number(values.get("height"))
        area = width * height if width > 10 and height > 10 else 0.0
        self.images.append((src, area))


def _number(value: str | None) -> float:
    try:
        return float(value) if value is not None else 0.0
    except ValueError:
        return 0.0
