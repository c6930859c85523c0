"""Split documents into sections: Markdown, HTML, PDF and the AgentFlow XML layout.

Every parser returns a :class:`Document` whose sections have string ids ``"1"``,
``"2"`` … in reading order (the XML layout keeps its own ``section_id`` values). This
module does no caching and knows nothing of tools; ``doc.py`` builds on it.
"""
from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["Document", "Section", "UnsupportedDocument", "load_document", "SUFFIXES"]

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "markdown", ".html": "html", ".htm": "html",
            ".pdf": "pdf"}


class UnsupportedDocument(ValueError):
    """The path is not a document this module can read (or the file is malformed)."""


@dataclasses.dataclass
class Section:
    id: str
    title: str
    level: int = 1
    text: str = ""
    page_start: int | None = None
    page_end: int | None = None
    figures: list[dict] = dataclasses.field(default_factory=list)
    tables: list[dict] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Document:
    path: Path
    format: str
    title: str
    sections: list[Section]
    pages: int | None = None

    def section(self, section_id: str) -> Section | None:
        for s in self.sections:
            if s.id == section_id:
                return s
        return None


def load_document(path: Path) -> Document:
    """Parse the document at ``path`` (a file, or a folder in the XML layout or holding one document)."""
    if path.is_dir():
        if (path / "all_content.xml").is_file() or (path / "outline.xml").is_file():
            return parse_xml_layout(path)
        docs = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
        if len(docs) != 1:
            found = ", ".join(p.name for p in docs[:10]) or "no document files"
            raise UnsupportedDocument(
                f"folder '{path.name}' is not in the outline.xml/all_content.xml layout and holds "
                f"{len(docs)} documents ({found}); name one file")
        path = docs[0]
    if path.name in ("all_content.xml", "outline.xml"):
        return parse_xml_layout(path.parent)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnsupportedDocument(f"'{path.name}': unsupported document type; supported: "
                                  ".md, .markdown, .txt, .html, .htm, .pdf, or a folder with all_content.xml")
    return {"markdown": parse_markdown, "html": parse_html, "pdf": parse_pdf}[kind](path)


# -- Markdown ----------------------------------------------------------------------
_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r" {0,3}(=+|-+)[ \t]*")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+[\"']([^\"']*)[\"'])?\s*\)")


def parse_markdown(path: Path) -> Document:
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    heads: list[tuple[int, int, int, str]] = []  # (first line, body start, level, title)
    fence = None
    for i, line in enumerate(lines):
        m = _FENCE.match(line)
        if m:
            fence = None if fence and m.group(1)[0] == fence else (fence or m.group(1)[0])
            continue
        if fence:
            continue
        m = _ATX.match(line)
        if m:
            heads.append((i, i + 1, len(m.group(1)), m.group(2)))
        elif (i and _SETEXT.fullmatch(line) and lines[i - 1].strip() and not _ATX.match(lines[i - 1])
              and not (heads and heads[-1][1] > i - 1)):
            heads.append((i - 1, i + 1, 1 if "=" in line else 2, lines[i - 1].strip()))
    sections: list[Section] = []
    pre = "\n".join(lines[:heads[0][0] if heads else len(lines)]).strip()
    if pre:
        sections.append(_md_section("1", path.stem, 1, pre, path))
    for n, (_, body_start, level, title) in enumerate(heads):
        end = heads[n + 1][0] if n + 1 < len(heads) else len(lines)
        body = "\n".join(lines[body_start:end]).strip()
        sections.append(_md_section(str(len(sections) + 1), title, level, body, path))
    title = next((h[3] for h in heads if h[2] == 1), path.stem)
    return Document(path, "markdown", title, sections)


def _md_section(sid: str, title: str, level: int, body: str, path: Path) -> Section:
    figures = [{"id": f"{sid}.{k}", "alt": m.group(1), "src": m.group(2), "caption": m.group(3) or m.group(1),
                "file": _local_file(path.parent, m.group(2))}
               for k, m in enumerate(_IMAGE.finditer(body), start=1)]
    return Section(sid, title.strip() or "(untitled)", level, body, figures=figures)


def _local_file(base: Path, src: str) -> Path | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", src, re.I):
        return None
    cand = (base / src.split("#")[0].split("?")[0]).resolve()
    return cand if cand.is_file() else None


# -- HTML --------------------------------------------------------------------------
_BLOCK = {"p", "div", "br", "li", "tr", "pre", "section", "article", "blockquote", "ul", "ol", "table", "dd",
          "dt", "figure", "figcaption", "hr", "main", "header", "footer", "caption", "h1", "h2", "h3", "h4", "h5",
          "h6", "dl", "tbody", "thead", "aside", "nav"}
_SKIP = {"script", "style", "noscript", "template", "head", "svg", "nav"}


class _HTMLSplitter(HTMLParser):
    def __init__(self, base: Path | None):
        super().__init__(convert_charrefs=True)
        self.base = base
        self.title = ""
        self.sections: list[dict] = [dict(title="", level=1, parts=[], figures=[], tables=[])]
        self._skip = 0
        self._in_title = False
        self._heading: list[str] | None = None
        self._heading_level = 1
        self._pre = 0
        self._table: list[list[str]] | None = None
        self._caption: list[str] | None = None

    @property
    def cur(self) -> dict:
        return self.sections[-1]

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "title":
            self._in_title = True
        if tag in _SKIP:
            self._skip += 1
            return
        if self._skip:
            return
        if re.fullmatch(r"h[1-6]", tag):
            self._heading, self._heading_level = [], int(tag[1])
            return
        if tag == "pre":
            self._pre += 1
        if tag == "table":
            self._table = []
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None and self._table:
            self._table[-1].append("")
        if tag == "figcaption":
            self._caption = []
        if tag == "img":
            src = attrs.get("src") or ""
            fig = {"id": "", "alt": attrs.get("alt") or "", "src": src, "caption": attrs.get("title") or attrs.get("alt") or "",
                   "file": _local_file(self.base, src) if self.base and src else None}
            self.cur["figures"].append(fig)
            if fig["alt"]:
                self._emit(f" [image: {fig['alt']}] ")
        if tag in _BLOCK:
            self._emit("\n")

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        if tag in _SKIP:
            self._skip = max(0, self._skip - 1)
            return
        if self._skip:
            return
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            title = " ".join("".join(self._heading).split())
            self._heading = None
            self.sections.append(dict(title=title, level=self._heading_level, parts=[], figures=[], tables=[]))
            return
        if tag == "pre":
            self._pre = max(0, self._pre - 1)
        if tag == "table" and self._table is not None:
            rows = [" | ".join(c.strip() for c in row) for row in self._table if any(c.strip() for c in row)]
            self.cur["tables"].append({"id": "", "text": "\n".join(rows)})
            self._table = None
        if tag == "figcaption" and self._caption is not None:
            if self.cur["figures"]:
                self.cur["figures"][-1]["caption"] = " ".join("".join(self._caption).split())
            self._caption = None
        if tag in ("td", "th"):
            self._emit(" | ")
        if tag in _BLOCK:
            self._emit("\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._skip:
            return
        if not self._pre:
            data = re.sub(r"\s+", " ", data)
        if self._heading is not None:
            self._heading.append(data)
            return
        if self._caption is not None:
            self._caption.append(data)
        if self._table is not None and self._table and self._table[-1]:
            self._table[-1][-1] += data
        self._emit(data)

    def _emit(self, text: str) -> None:
        self.cur["parts"].append(text)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment (tables as ``a | b`` rows)."""
    p = _HTMLSplitter(None)
    p.feed(markup)
    p.close()
    return "\n\n".join(_clean("".join(s["parts"])) for s in p.sections if "".join(s["parts"]).strip())


def _table_text(markup: str) -> str:
    """Rows of the tables in an HTML fragment as ``a | b`` lines (else its visible text)."""
    p = _HTMLSplitter(None)
    p.feed(markup)
    p.close()
    tables = [t["text"] for s in p.sections for t in s["tables"]]
    return "\n\n".join(tables) if tables else html_to_text(markup)


def _clean(text: str) -> str:
    text = re.sub(r"[ \t]*\|[ \t]*\n", "\n", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n[ \t]+(?=\S)", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_html(path: Path) -> Document:
    p = _HTMLSplitter(path.parent)
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    p.close()
    raw = p.sections
    if not "".join(raw[0]["parts"]).strip() and not raw[0]["figures"]:
        raw = raw[1:]
    sections = []
    for n, s in enumerate(raw, start=1):
        sid = str(n)
        for k, fig in enumerate(s["figures"], start=1):
            fig["id"] = f"{sid}.{k}"
        for k, tab in enumerate(s["tables"], start=1):
            tab["id"] = f"{sid}.{k}"
        sections.append(Section(sid, s["title"] or (p.title.strip() or path.stem), s["level"],
                                _clean("".join(s["parts"])), figures=s["figures"], tables=s["tables"]))
    title = " ".join(p.title.split()) or next((s.title for s in sections if s.level == 1), path.stem)
    return Document(path, "html", title, sections)


# -- PDF ---------------------------------------------------------------------------
def parse_pdf(path: Path) -> Document:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError as err:  # pragma: no cover - pypdf is a dependency
        raise UnsupportedDocument("reading PDF needs the 'pypdf' package") from err
    try:
        reader = PdfReader(str(path))
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
        marks = _pdf_outline(reader, reader.outline)
    except (PdfReadError, OSError, ValueError, KeyError) as err:
        raise UnsupportedDocument(f"'{path.name}': cannot read PDF: {err}") from err
    title = (reader.metadata.title if reader.metadata and reader.metadata.title else "") or path.stem
    if not marks:  # no bookmarks: one section per page
        sections = [Section(str(i + 1), _first_line(text) or f"Page {i + 1}", 1, text, i + 1, i + 1)
                    for i, text in enumerate(pages)]
        return Document(path, "pdf", title, sections, len(pages))
    # Concatenate pages and cut where each bookmark's title appears on its page.
    offsets, full = [], ""
    for text in pages:
        offsets.append(len(full))
        full += text + "\n\n"
    cuts = []
    for level, name, page in sorted(marks, key=lambda m: m[2]):
        start = offsets[page]
        stop = offsets[page + 1] if page + 1 < len(offsets) else len(full)
        pattern = r"\s+".join(re.escape(w) for w in name.split())
        m = re.search(pattern, full[max(start, cuts[-1][0] if cuts else 0):stop], re.I) if pattern else None
        pos = (max(start, cuts[-1][0] if cuts else 0) + m.start()) if m else start
        cuts.append((pos, level, name, len(name) if m else 0))
    sections = []
    if full[:cuts[0][0]].strip():
        sections.append(_pdf_section("1", "Front matter", 1, full, 0, cuts[0][0], offsets))
    for n, (pos, level, name, skip) in enumerate(cuts):
        end = cuts[n + 1][0] if n + 1 < len(cuts) else len(full)
        sections.append(_pdf_section(str(len(sections) + 1), name, level, full, pos, end, offsets, skip))
    return Document(path, "pdf", title, sections, len(pages))


def _pdf_outline(reader, items, level: int = 1) -> list[tuple[int, str, int]]:
    out = []
    for item in items or []:
        if isinstance(item, list):
            out.extend(_pdf_outline(reader, item, level + 1))
            continue
        try:
            page = reader.get_destination_page_number(item)
        except Exception:  # noqa: BLE001 - a broken bookmark is skipped, not fatal
            continue
        if page is not None and page >= 0:
            out.append((level, str(item.title).strip(), page))
    return out


def _pdf_section(sid, title, level, full, start, end, offsets, skip=0) -> Section:
    import bisect

    body = full[start + skip:end].strip()
    first = bisect.bisect_right(offsets, start)
    last = bisect.bisect_right(offsets, max(start, end - 1))
    return Section(sid, title, level, body, first, last)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:80]
    return ""


# -- AgentFlow XML layout (outline.xml / all_content.xml) ------------------------------
def parse_xml_layout(folder: Path) -> Document:
    source = folder / "all_content.xml"
    outline_only = not source.is_file()
    if outline_only:
        source = folder / "outline.xml"
    try:
        root = ET.parse(source).getroot()
    except ET.ParseError as err:
        raise UnsupportedDocument(f"'{source.name}' in '{folder.name}' is not valid XML: {err}") from err
    sections, title, pages = [], "", 0
    for n, el in enumerate(root.iter("Section"), start=1):
        sid = el.get("section_id") or str(n)
        heading, parts, figures, tables = "", [], [], []
        for child in el:
            tag, text = child.tag, (child.text or "").strip()
            if tag == "Title":
                title = title or text
                heading = heading or text
                parts.append(text)
            elif tag == "Heading":
                heading = heading or text
            elif tag == "Paragraph":
                parts.append(text or child.get("first_sentence", ""))
            elif tag == "Image":
                fig = _xml_figure(folder, child)
                figures.append(fig)
                parts.append(f"[Figure {fig['id']}] {fig['caption'] or fig['description'][:200]}")
            elif tag in ("HTML_Table", "Table"):
                tid = child.get("table_id", str(len(tables)))
                caption = (child.findtext("Caption") or "").strip()
                table_text = _table_text(text) if "<" in text else text
                tables.append({"id": tid, "page": _page(child.get("page_num")), "caption": caption, "text": table_text,
                               "file": _first_file(folder, [f"tables/table_{tid}.png", f"tables/table_{tid}.jpg"])})
                parts.append(f"[Table {tid}] {caption}\n{table_text}")
            elif tag == "Caption":
                parts.append(text)
        start, end = _page(el.get("start_page_num")), _page(el.get("end_page_num"))
        pages = max(pages, end or 0)
        if not heading:
            heading = (parts[0][:80] if parts else "") or f"Section {sid}"
        level = 1 + heading.split(" ", 1)[0].count(".") if re.match(r"^[A-Z0-9]+(\.[0-9]+)*\s", heading) else 1
        sections.append(Section(sid, heading, level, "\n\n".join(p for p in parts if p), start, end, figures, tables))
    if not sections:
        raise UnsupportedDocument(f"'{source.name}' in '{folder.name}' has no <Section> elements")
    return Document(folder, "xml-outline" if outline_only else "xml", title or folder.name, sections, pages or None)


def _xml_figure(folder: Path, el: ET.Element) -> dict:
    fid = el.get("image_id", "")
    return {
        "id": fid,
        "page": _page(el.get("page_num")),
        "caption": (el.findtext("Caption") or "").strip(),
        "description": (el.findtext("Alt_Text") or el.get("first_sentence_of_image_description") or "").strip(),
        "file": _first_file(folder, [f"figures/image_{fid}.{ext}" for ext in ("png", "jpg", "jpeg")]
                            + [f"images/image_{fid}.png", f"image_{fid}.png"]),
    }


def _first_file(folder: Path, names: list[str]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _page(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None
