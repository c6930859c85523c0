"""Build a passage corpus (JSONL ``{id, title, text}``) from a folder of documents.

Text (``.txt``), Markdown (``.md``, ``.markdown``) and HTML (``.html``, ``.htm``) files
are read in sorted path order. Markdown is split at headings, text at blank lines, HTML
is reduced to clean text first; sections are then cut into passages of about 1,200
characters. Passage ids are ``<relative path>#<n>``; titles are the document title plus
the section heading.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from ._html import html_to_text
from ._pydocs import split_passages

__all__ = ["SUFFIXES", "folder_passages", "write_corpus"]

SUFFIXES = {".txt": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html"}
_MD_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")


def _sections(text: str) -> Iterator[tuple[str, str]]:
    """Split Markdown-ish text at ``#`` headings into (heading, body)."""
    heading, body = "", []
    in_fence = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_fence = not in_fence
        match = None if in_fence else _MD_HEADING.match(line)
        if match:
            if "".join(body).strip():
                yield heading, "\n".join(body)
            heading, body = match.group(2).strip(), []
        else:
            body.append(line)
    if "".join(body).strip():
        yield heading, "\n".join(body)


def _document(path: Path) -> tuple[str, list[tuple[str, str]]]:
    raw = path.read_text(encoding="utf-8", errors="replace")
    kind = SUFFIXES[path.suffix.lower()]
    if kind == "html":
        page = html_to_text(raw)
        sections = list(_sections(page.text))
        return page.title or path.stem, sections
    if kind == "markdown":
        sections = list(_sections(raw))
        first = next((h for h, _ in sections if h), "")
        return first or path.stem, sections
    return path.stem.replace("_", " "), [("", raw)]


def folder_passages(folder: Path, max_chars: int = 1200) -> Iterator[dict]:
    """Yield passages of every supported file under ``folder``."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    for path in files:
        rel = path.relative_to(folder).as_posix()
        title, sections = _document(path)
        n = 0
        for heading, body in sections:
            full_title = f"{title} — {heading}" if heading and heading != title else title
            for passage in split_passages(body, max_chars):
                yield {"id": f"{rel}#{n}", "title": full_title, "text": passage}
                n += 1


def write_corpus(passages: Iterable[dict], out: Path) -> int:
    """Write passages as JSONL (atomically); returns how many were written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    count = 0
    with open(tmp, "w", encoding="utf-8") as fh:
        for passage in passages:
            fh.write(json.dumps(passage, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(out)
    return count
