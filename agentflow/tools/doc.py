"""``doc``: outline, search and read documents section by section.

``seed_path`` names a document inside the configured roots: a Markdown, HTML or PDF
file, or a folder in the AgentFlow layout (``outline.xml`` + ``all_content.xml``, with
optional ``figures/image_<id>.png``). Relative paths resolve against the project
directory first, then each root. Parsed documents are cached per process and reparsed
when the file changes.

Config (``resources.doc.config`` or ``apis.doc``; the AgentFlow option names)::

    {"seed_path": "seeds/doc/markdown/python_execution_model.md",   # default document
     "max_search_results": 10, "max_image_num": 10, "max_text_token": 20000,
     "vlm_model": "…", "vlm_api_key": "…", "vlm_api_url": "https://…/v1",
     "vlm_max_tokens": 2048, "vlm_timeout": 120, "vlm_retry_max_attempts": 3}

``doc:read`` with a ``goal`` adds a model ``summary`` only when ``vlm_model`` and
``vlm_api_key`` are set; otherwise the goal is ignored and the result says so in ``note``.
Its ``max_text_token`` and ``max_image_num`` parameters override the options of those
names for one call: the text budget (in tokens of about 4 characters) and the number of
figures and tables included (and of images sent to the model).
"""
from __future__ import annotations

import base64
import collections
import json
import logging
import re
import threading
from pathlib import Path

from ._docparse import Document, Section, UnsupportedDocument, load_document
from .base import Backend, BackendConfigError, ParamError, ToolContext, ToolError, resolve_path, tool

log = logging.getLogger(__name__)

_SEED_PATH = {
    "type": "string",
    "description": "The document: a .md, .html or .pdf file, or a folder with outline.xml/all_content.xml "
                   "(a path inside the sandbox's document roots, e.g. 'seeds/doc/html/…'). "
                   "May be left out when the server has a default document.",
}
_CHARS_PER_TOKEN = 4
_SNIPPET = 90


class DocBackend(Backend):
    """Section-level access to documents (Markdown, HTML, PDF, AgentFlow XML layout)."""

    name = "doc"
    description = "Read long documents: outline, keyword search and reading by section"
    uses_sessions = False
    config_keys = frozenset({
        "seed_path", "max_search_results", "max_image_num", "max_text_token", "vlm_model", "vlm_api_key",
        "vlm_api_url", "vlm_max_tokens", "vlm_timeout", "vlm_retry_max_attempts", "cache_size",
    })

    def check_config(self) -> None:
        super().check_config()
        for key in ("max_search_results", "max_image_num", "max_text_token", "vlm_max_tokens",
                    "vlm_retry_max_attempts", "cache_size"):
            value = self.config.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise BackendConfigError(f"resource 'doc': {key} must be a non-negative integer, got {value!r}")
        timeout = self.config.get("vlm_timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            raise BackendConfigError(f"resource 'doc': vlm_timeout must be a positive number, got {timeout!r}")
        self._cache: collections.OrderedDict[tuple, Document] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = int(self.config.get("cache_size") or 32)
        if self.config.get("seed_path"):
            default = Path(self.config["seed_path"])
            full = default if default.is_absolute() else self.context.project_dir / default
            if not full.exists():
                log.warning("doc: the default seed_path %s does not exist; calls must give seed_path", full)

    @property
    def model_configured(self) -> bool:
        return bool(self.config.get("vlm_model") and self.config.get("vlm_api_key"))

    # -- tools -------------------------------------------------------------------
    @tool(
        "outline",
        "Show the outline of a document: every section's id, title, level, pages and a short preview. "
        "Use the ids with doc:read and doc:search.",
        {"properties": {"seed_path": _SEED_PATH}},
        default_timeout=30,
    )
    def outline(self, ctx: ToolContext, seed_path: str | None = None) -> dict:
        doc, shown = self._document(seed_path)
        sections = [{
            "section_id": s.id, "title": s.title, "level": s.level, **_pages(s),
            "figures": len(s.figures), "tables": len(s.tables), "preview": _preview(s.text, 120),
        } for s in doc.sections]
        result = {"seed_path": shown, "format": doc.format, "title": doc.title, "pages": doc.pages,
                  "section_count": len(sections), "sections": sections}
        if _size(result) > ctx.max_output_bytes:
            for s in sections:
                s.pop("preview")
            while sections and _size(result) > ctx.max_output_bytes:
                sections.pop()
            result["truncated"] = True
            result["note"] = f"only the first {len(sections)} sections fit the output limit"
        return result

    @tool(
        "search",
        "Search a document for key words (case-insensitive) in section titles, text, figure captions and "
        "tables. Returns the matching sections, best first, with snippets around the matches.",
        {
            "properties": {
                "seed_path": _SEED_PATH,
                "key_words": {"type": ["string", "array"], "items": {"type": "string"},
                              "description": "A key word or phrase, or a list of them."},
                "max_results": {"type": "integer", "minimum": 1, "description": "Most sections to return (default 10)."},
                "max_search_results": {"type": "integer", "minimum": 1, "description": "Same as max_results."},
            },
            "required": ["key_words"],
        },
        default_timeout=30,
    )
    def search(self, ctx: ToolContext, key_words, seed_path: str | None = None, max_results: int | None = None,
               max_search_results: int | None = None) -> dict:
        words = [key_words] if isinstance(key_words, str) else list(key_words)
        words = [w.strip() for w in words if isinstance(w, str) and w.strip()]
        if not words:
            raise ParamError("key_words", "give at least one non-empty key word")
        limit = max_results or max_search_results or int(self.config.get("max_search_results") or 10)
        doc, shown = self._document(seed_path)
        hits = [h for h in (_match(s, words) for s in doc.sections) if h]
        hits.sort(key=lambda h: (-len(h["matched"]), -h["score"], _id_key(h["section_id"])))
        result = {"seed_path": shown, "key_words": words, "total_matches": len(hits), "results": hits[:limit]}
        if not hits:
            result["note"] = "no section contains these key words; try other words or doc:outline"
        return result

    @tool(
        "read",
        "Read whole sections of a document by id (from doc:outline or doc:search): their text, figures "
        "(caption, description, image file) and tables. With 'goal', a model summarises what the sections "
        "say about it, when the server has one configured.",
        {
            "properties": {
                "seed_path": _SEED_PATH,
                "section_ids": {"type": ["array", "string", "integer"], "items": {"type": ["string", "integer"]},
                                "description": "Section ids to read, e.g. [\"3\", \"4\"]."},
                "goal": {"type": "string", "description": "What you want to learn from these sections."},
                "max_image_num": {"type": "integer", "minimum": 0,
                                  "description": "Most figures and tables to include (and images to send to "
                                                 "the model with 'goal'); default: the server's max_image_num."},
                "max_text_token": {"type": "integer", "minimum": 1,
                                   "description": "Most section text to return, in tokens of about 4 characters "
                                                  "(default: the server's max_text_token, 20000)."},
            },
            "required": ["section_ids"],
        },
        default_timeout=60,
        max_timeout=900,
    )
    def read(self, ctx: ToolContext, section_ids, seed_path: str | None = None, goal: str | None = None,
             max_image_num: int | None = None, max_text_token: int | None = None) -> dict:
        ids = [section_ids] if isinstance(section_ids, (str, int)) else list(section_ids)
        ids = [str(i).strip() for i in ids if str(i).strip()]
        if not ids:
            raise ParamError("section_ids", "give at least one section id")
        doc, shown = self._document(seed_path)
        unknown = [i for i in ids if doc.section(i) is None]
        if unknown:
            valid = [s.id for s in doc.sections]
            listing = ", ".join(valid[:60]) + (" …" if len(valid) > 60 else "")
            raise ParamError("section_ids", f"no section {', '.join(repr(u) for u in unknown)} in '{shown}'; "
                                            f"section ids are: {listing}")
        text_tokens = max_text_token or int(self.config.get("max_text_token") or 20000)
        budget = min(text_tokens * _CHARS_PER_TOKEN, max(1000, ctx.max_output_bytes - 2000))
        visuals = max_image_num if max_image_num is not None else self.config.get("max_image_num")
        room = visuals  # None: every figure and table
        out, truncated, omitted = [], False, 0
        for sid in dict.fromkeys(ids):
            s = doc.section(sid)
            text = s.text
            if len(text) > budget:
                text, truncated = text[:budget] + f"\n… [section cut: {len(s.text)} chars in full]", True
            budget = max(0, budget - len(text))
            figures = [self._figure(f) for f in s.figures]
            tables = [{k: (self._display(v) if k == "file" else v) for k, v in t.items() if k != "text"}
                      for t in s.tables]
            if room is not None:
                kept_figures, kept_tables = figures[:room], tables[:max(0, room - len(figures))]
                omitted += len(figures) + len(tables) - len(kept_figures) - len(kept_tables)
                room -= len(kept_figures) + len(kept_tables)
                figures, tables = kept_figures, kept_tables
            out.append({"section_id": s.id, "title": s.title, **_pages(s), "text": text,
                        "figures": figures, "tables": tables})
        result: dict = {"seed_path": shown, "title": doc.title, "sections": out}
        if truncated:
            result["truncated"] = True
        if omitted:
            result["visuals_omitted"] = omitted  # figures and tables past max_image_num
        if goal and goal.strip():
            if self.model_configured:
                images = visuals if visuals is not None else 10
                result.update(self._summarise(goal.strip(), doc, [doc.section(i) for i in dict.fromkeys(ids)], ctx,
                                              max_images=images, text_tokens=text_tokens))
            else:
                result["note"] = ("goal ignored: no model is configured for the doc tools (set vlm_model and "
                                  "vlm_api_key in the server config); the full section text is returned")
        return result

    # -- helpers -----------------------------------------------------------------
    def _document(self, seed_path: str | None) -> tuple[Document, str]:
        value = seed_path or self.config.get("seed_path")
        if not value:
            raise ParamError("seed_path", "is required (no default document is configured)")
        roots = self.context.roots or [self.context.project_dir / "seeds"]
        path = resolve_path(str(value), roots, "seed_path", base=self.context.project_dir)
        key = _cache_key(path)
        with self._cache_lock:
            doc = self._cache.get(key)
            if doc is not None:
                self._cache.move_to_end(key)
                return doc, str(value)
        try:
            doc = load_document(path)
        except UnsupportedDocument as err:
            raise ParamError("seed_path", str(err)) from None
        except (OSError, UnicodeError) as err:
            raise ToolError(f"cannot read '{value}': {err}") from None
        with self._cache_lock:
            self._cache[key] = doc
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return doc, str(value)

    def _display(self, path: Path | None) -> str | None:
        """A figure file as the client would name it: relative to the project (or a root) when inside."""
        if path is None:
            return None
        for base in [self.context.project_dir, *self.context.roots]:
            try:
                return str(path.resolve().relative_to(base.resolve()))
            except ValueError:
                continue
        return str(path)

    def _figure(self, fig: dict) -> dict:
        return {k: (self._display(v) if k == "file" else v) for k, v in fig.items() if v not in ("", None)}

    def _summarise(self, goal: str, doc: Document, sections: list[Section], ctx: ToolContext, *,
                   max_images: int, text_tokens: int) -> dict:
        from openai import OpenAI, OpenAIError

        text = "\n\n".join(f"## [{s.id}] {s.title}\n{s.text}" for s in sections)
        text = text[: text_tokens * _CHARS_PER_TOKEN]
        prompt = (f"Document: {doc.title}\nGoal: {goal}\n\nUsing only the sections below (and their figures), "
                  f"extract the information relevant to the goal. Cite section ids.\n\n{text}")
        content: list[dict] = [{"type": "text", "text": prompt}]
        images = [f["file"] for s in sections for f in s.figures
                  if f.get("file") and f["file"].suffix.lower() in (".png", ".jpg", ".jpeg")]
        for img in images[:max_images]:
            mime = "image/png" if img.suffix.lower() == ".png" else "image/jpeg"
            data = base64.b64encode(img.read_bytes()).decode()
            content.append({"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}})
        client = OpenAI(api_key=self.config["vlm_api_key"], base_url=self.config.get("vlm_api_url") or None,
                        timeout=max(1.0, min(float(self.config.get("vlm_timeout", 120)), ctx.remaining)),
                        max_retries=int(self.config.get("vlm_retry_max_attempts", 2)))
        try:
            reply = client.chat.completions.create(
                model=self.config["vlm_model"], messages=[{"role": "user", "content": content}],
                max_tokens=int(self.config.get("vlm_max_tokens", 2048)),
            )
        except OpenAIError as err:
            log.warning("doc:read summary failed: %s", err)
            return {"summary": None, "summary_error": f"{type(err).__name__}: {err}"}
        return {"summary": reply.choices[0].message.content, "summary_model": self.config["vlm_model"],
                "images_sent": min(len(images), max_images)}


def _cache_key(path: Path) -> tuple:
    files = [path]
    if path.is_dir():
        files += [path / n for n in ("all_content.xml", "outline.xml")] + sorted(path.glob("*.*"))[:20]
    stats = []
    for f in files:
        try:
            st = f.stat()
            stats.append((f.name, st.st_mtime_ns, st.st_size))
        except OSError:
            continue
    return (str(path), tuple(stats))


def _pages(s: Section) -> dict:
    return {"page_start": s.page_start, "page_end": s.page_end} if s.page_start is not None else {}


def _preview(text: str, n: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[:n].rsplit(" ", 1)[0] + " …"


def _size(obj) -> int:
    return len(json.dumps(obj, ensure_ascii=False, default=str).encode())


def _id_key(sid: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in re.split(r"[.\-_]", sid))


def _match(section: Section, words: list[str]) -> dict | None:
    """Score one section against the key words; None when nothing matches."""
    fields = [("title", section.title), ("text", section.text)]
    fields += [(f"figure {f['id']}", " ".join(filter(None, [f.get("caption"), f.get("description"), f.get("alt")])))
               for f in section.figures]
    fields += [(f"table {t['id']}", " ".join(filter(None, [t.get("caption"), t.get("text")]))) for t in section.tables]
    matched, where, score, snippets = [], set(), 0, []
    for word in words:
        pattern = re.compile(re.escape(word), re.I)
        found = False
        for name, text in fields:
            spans = [m.span() for m in pattern.finditer(text)]
            if not spans:
                continue
            found = True
            where.add(name)
            score += len(spans) + (10 if name == "title" else 0)
            if name != "title" and len(snippets) < 3:
                snippets.append(_snippet(text, *spans[0]))
        if not found and " " in word:  # a phrase: accept all of its words in the section
            parts = [re.compile(re.escape(p), re.I) for p in word.split()]
            blob = "\n".join(t for _, t in fields)
            if all(p.search(blob) for p in parts):
                found = True
                score += 1
                m = parts[0].search(section.text)
                if m and len(snippets) < 3:
                    snippets.append(_snippet(section.text, *m.span()))
        if found:
            matched.append(word)
    if not matched:
        return None
    return {"section_id": section.id, "title": section.title, **_pages(section), "matched": matched,
            "found_in": sorted(where), "score": score, "snippets": snippets}


def _snippet(text: str, start: int, end: int) -> str:
    a, b = max(0, start - _SNIPPET), min(len(text), end + _SNIPPET)
    return ("…" if a else "") + " ".join(text[a:b].split()) + ("…" if b < len(text) else "")


__all__ = ["DocBackend"]
