"""HTML to clean text with the standard library's ``html.parser``.

Used by the web backend (``web:visit``) and the corpus builder. The result keeps the
reading order and paragraph breaks of the page, drops scripts, styles, navigation,
headers, footers and forms, marks headings with ``#`` and list items with ``-``, and
keeps ``<pre>`` blocks verbatim. When the page has a ``<main>`` or ``<article>``
element (or ``role="main"``), only that part is returned.
"""
from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser

__all__ = ["ExtractedPage", "html_to_text"]

_SKIP = {"script", "style", "noscript", "template", "svg", "nav", "header", "footer",
         "form", "button", "select", "iframe", "object", "canvas", "aside"}
_BLOCK = {"p", "div", "section", "article", "main", "br", "hr", "tr", "table", "ul", "ol",
          "dl", "dt", "dd", "blockquote", "figure", "figcaption", "li", "pre", "h1", "h2",
          "h3", "h4", "h5", "h6", "body", "html", "caption", "details", "summary", "address"}
_VOID = {"br", "hr", "img", "input", "meta", "link", "area", "base", "col", "embed",
         "source", "track", "wbr", "param"}
_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0]+")


@dataclasses.dataclass
class ExtractedPage:
    """Text of one HTML page: ``title`` (``<title>`` or the first ``<h1>``) and ``text``."""

    title: str
    text: str


class _Extractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.skip_depth = 0
        self.skip_stack: list[str] = []
        self.pre_depth = 0
        self.main_depth = 0
        self.main_seen = False
        self.title_parts: list[str] = []
        self.in_title = False
        self.h1_parts: list[str] | None = None
        self.h1_text = ""
        # Text blocks: (inside_main, text). A block ends at every block-level tag.
        self.blocks: list[tuple[bool, str]] = []
        self.current: list[str] = []
        self.prefix = ""
        self.open_stack: list[str] = []

    # -- blocks ------------------------------------------------------------------
    def _flush(self) -> None:
        raw = "".join(self.current)
        self.current = []
        prefix, self.prefix = self.prefix, ""
        text = raw if self.pre_depth else _SPACES.sub(" ", raw).strip()
        if text.strip():
            self.blocks.append((self.main_depth > 0, prefix + text.rstrip() if self.pre_depth else prefix + text))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "title" and not self.skip_depth:
            self.in_title = True
            return
        if self.skip_depth or tag in _SKIP or attr.get("hidden") is not None or attr.get("aria-hidden") == "true":
            if tag not in _VOID:
                self.skip_depth += 1
                self.skip_stack.append(tag)
            return
        if tag in _BLOCK:
            self._flush()
        if tag in ("main", "article") or attr.get("role") == "main":
            self.main_depth += 1
            self.main_seen = True
            self.open_stack.append(tag + "#main")
        elif tag not in _VOID:
            self.open_stack.append(tag)
        if tag == "pre":
            self.pre_depth += 1
        elif tag in _HEADINGS:
            self.prefix = "#" * _HEADINGS[tag] + " "
            if tag == "h1" and self.h1_parts is None and not self.h1_text:
                self.h1_parts = []
        elif tag == "li":
            self.prefix = "- "
        elif tag in ("td", "th"):
            self.current.append(" | " if "".join(self.current).strip() else "")
        elif tag == "img" and attr.get("alt"):
            self.current.append(f" [{attr['alt']}] ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
            return
        if self.skip_depth:
            if tag in self.skip_stack:
                while self.skip_stack:
                    self.skip_depth -= 1
                    if self.skip_stack.pop() == tag:
                        break
            return
        if tag not in self.open_stack and tag + "#main" not in self.open_stack:
            return  # stray end tag
        while self.open_stack:
            top = self.open_stack.pop()
            name, _, main = top.partition("#")
            if name in _BLOCK:
                self._flush()
            if main:
                self.main_depth -= 1
            if name == "pre":
                self.pre_depth -= 1
            if name == "h1" and self.h1_parts is not None:
                self.h1_text = _SPACES.sub(" ", "".join(self.h1_parts)).strip()
                self.h1_parts = None
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
            return
        if self.skip_depth:
            return
        self.current.append(data)
        if self.h1_parts is not None:
            self.h1_parts.append(data)

    def result(self) -> ExtractedPage:
        self._flush()
        blocks = [text for in_main, text in self.blocks if in_main or not self.main_seen]
        title = _SPACES.sub(" ", "".join(self.title_parts)).strip() or self.h1_text
        return ExtractedPage(title=title, text="\n\n".join(blocks))


def html_to_text(html: str) -> ExtractedPage:
    """Extract the readable text and title of an HTML document.

    Args:
        html: the document (any size; broken markup is tolerated).

    Returns:
        The page title and its text, paragraphs separated by blank lines.
    """
    parser = _Extractor()
    parser.feed(html)
    parser.close()
    return parser.result()
