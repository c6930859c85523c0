"""The offline page store of the web backend's ``local`` provider.

A store is a folder with ``manifest.jsonl`` (one ``{url, title, file}`` per page, ``file``
relative to the folder) and the HTML files. Pages keep their real canonical URL; the
shipped store (``seeds/web``) holds Python module documentation under
``https://docs.python.org/3/library/…``. At warmup the pages' clean text is indexed with
FTS5 (see :mod:`agentflow.tools._fts`) for ``web:search``; ``web:visit`` looks URLs up here first.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from .._html import html_to_text

__all__ = ["PageStore", "normalize_url", "page_file"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """Canonical form of an http(s) URL: lower-case scheme and host, no default port,
    no fragment, ``/`` for an empty path. A bare ``host/path`` gets ``https://``.

    Raises:
        ValueError: not an http(s) URL.
    """
    url = (url or "").strip()
    if "://" not in url and re.match(r"^[\w.-]+\.[a-z]{2,}(/|$)", url, re.I):
        url = "https://" + url
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if parts.port and parts.port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}{':' + parts.password if parts.password else ''}@{host}"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


def page_file(url: str) -> str:
    """Relative file name under which a page of ``url`` is stored (``pages/<host>/<path>``)."""
    parts = urlsplit(normalize_url(url))
    path = parts.path
    if path.endswith("/"):
        path += "index.html"
    if parts.query:
        path += "_" + hashlib.sha256(parts.query.encode()).hexdigest()[:10] + ".html"
    safe = "/".join(re.sub(r"[^\w.\-]", "_", seg) for seg in path.split("/") if seg not in ("", ".", ".."))
    return f"pages/{parts.hostname}/{safe}"


class PageStore:
    """Pages of a store folder, by normalised URL."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.manifest = self.folder / "manifest.jsonl"
        self.entries: dict[str, dict] = {}
        with open(self.manifest, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    url = normalize_url(entry["url"])
                    file = self.folder / entry["file"]
                except (ValueError, KeyError, TypeError) as err:
                    raise ValueError(f"{self.manifest}: line {lineno}: {err}") from None
                if not file.is_file():
                    raise ValueError(f"{self.manifest}: line {lineno}: file {entry['file']} is missing")
                self.entries[url] = {"url": entry["url"], "title": entry.get("title") or "", "path": file}

    def fingerprint_files(self) -> list[Path]:
        return [self.manifest] + [e["path"] for e in self.entries.values()]

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, url: str) -> dict | None:
        """The stored page of ``url`` as ``{url, title, text}``, or None."""
        try:
            key = normalize_url(url)
        except ValueError:
            return None
        entry = self.entries.get(key)
        if entry is None and key.startswith("http://"):
            entry = self.entries.get("https://" + key[len("http://"):])
        if entry is None:
            return None
        page = html_to_text(entry["path"].read_text(encoding="utf-8", errors="replace"))
        return {"url": entry["url"], "title": entry["title"] or page.title, "text": page.text}

    def documents(self) -> Iterator[dict]:
        """``{id: url, title, text}`` of every page, for the search index."""
        for entry in self.entries.values():
            page = html_to_text(entry["path"].read_text(encoding="utf-8", errors="replace"))
            yield {"id": entry["url"], "title": entry["title"] or page.title, "text": page.text}
