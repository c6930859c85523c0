"""Retrieval over a JSONL passage corpus: BM25 in sqlite FTS5.

The corpus is a JSONL file of ``{id, title, text}`` objects (FlashRAG's
``{id, contents}`` with the title on the first line is read too). At warmup it is
indexed into an FTS5 file under ``<data_dir>/rag/``, named by the corpus fingerprint
(path, size, mtime), so an index is built once and reused by every server process and
restart, and rebuilt when the corpus file changes (checked again at most once a second
while serving).

Options (``resources.rag.config``):

- ``corpus_path``: the JSONL corpus (default: the shipped ``seeds/rag/corpus.jsonl``,
  passages of the Python reference and standard-library docs).
- ``default_top_k`` (5), ``max_top_k`` (100).
- ``index_dir``: where index files go (default ``<data_dir>/rag``).

AgentFlow's dense-retrieval options (``model_name``, ``index_path``, ``device``,
``batcher_*``) are accepted so that its ``rag_config.json`` starts, but retrieval stays
BM25: no embedding model ships with AgentFlow and none is downloaded. Warmup, the warmup
status and ``rag:stats`` say so (``retrieval``, ``dense_options_ignored``, ``note``).

``rag:search`` answers ``hits`` (id, title, text, score, rank) and ``context``, the same
passages as one text for a model's prompt; ``rag:batch_search`` gives ``contexts``, one
such text per query.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from pathlib import Path
from typing import Iterator

from ._fts import FtsIndex, IndexInterrupted, build_index, file_fingerprint, match_query
from .base import Backend, BackendConfigError, BackendNotReady, ParamError, ToolContext, ToolError, ToolTimeout, tool

__all__ = ["RagBackend", "context_text", "read_corpus", "shipped_path"]

log = logging.getLogger(__name__)

_DENSE_KEYS = frozenset({"model_name", "index_path", "device", "batcher_trigger_batch_size",
                         "batcher_max_batch_size", "batcher_max_wait_time"})
_RECHECK_SECONDS = 1.0
_QUERY_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 4000,
                 "description": "What to look for, in natural language or keywords."}


def shipped_path(relative: str, project_dir: Path | None = None) -> Path:
    """A file shipped in the repository (``seeds/…``), looked up in the project dir
    first and then beside the installed package."""
    from ..config import data_path

    candidates = ([Path(project_dir) / relative] if project_dir else []) + [data_path() / relative]
    for cand in candidates:
        if cand.exists():
            return cand
    return candidates[-1]


def read_corpus(path: Path) -> Iterator[dict]:
    """Yield ``{id, title, text}`` passages of a JSONL corpus.

    Raises:
        ValueError: a line is not a JSON object with a text (the message names the line).
    """
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}: line {lineno} is not a JSON object")
            title, text = obj.get("title"), obj.get("text")
            if text is None and isinstance(obj.get("contents"), str):
                head, _, rest = obj["contents"].partition("\n")
                title, text = (title or head.strip().strip('"')), rest
            if not isinstance(text, str):
                raise ValueError(f"{path}: line {lineno} has no string 'text' (or 'contents')")
            doc_id = obj.get("id", obj.get("_id", lineno))
            yield {"id": str(doc_id), "title": str(title or ""), "text": text}


def _positive_int(config: dict, key: str, default: int) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BackendConfigError(f"resource 'rag': option {key} must be a positive integer, got {value!r}")
    return value


def _fit_hits(hits: list[dict], budget: int) -> bool:
    """Shorten hit texts in place so the hits' JSON stays within about ``budget`` bytes."""
    if not hits or len(json.dumps(hits).encode()) <= budget:
        return False
    fixed = sum(len(json.dumps({**h, "text": ""}).encode()) + 45 for h in hits)
    share = max(0, (budget - fixed) // len(hits))
    for hit in hits:
        encoded = len(json.dumps(hit["text"]).encode())
        if encoded > share:
            keep = int(len(hit["text"]) * share / encoded)
            hit["text_chars"] = len(hit["text"])
            hit["text"] = hit["text"][:keep] + "…"
            hit["text_truncated"] = True
    return True


def context_text(hits: list[dict]) -> str:
    """The passages of ``hits`` as one text for a prompt: ``[rank] title`` over each
    passage's text, blank lines between passages ("" when there are none)."""
    return "\n\n".join(f"[{h['rank']}] {h['title']}\n{h['text']}" if h.get("title") else
                       f"[{h['rank']}]\n{h['text']}" for h in hits)


def _fit_text(text: str, budget: int) -> str:
    """``text`` cut (with "…") so that its JSON encoding takes at most about ``budget`` bytes."""
    size = len(json.dumps(text).encode())
    if size <= budget:
        return text
    keep = max(0, int(len(text) * max(budget - 8, 0) / size))
    return text[:keep] + "…"


class RagBackend(Backend):
    """BM25 passage retrieval (sqlite FTS5) over a JSONL corpus."""

    name = "rag"
    description = "Passage retrieval (BM25) over a document corpus"
    uses_sessions = False
    config_keys = frozenset({"corpus_path", "default_top_k", "max_top_k", "index_dir"}) | _DENSE_KEYS

    def check_config(self) -> None:
        super().check_config()
        self.dense_ignored = sorted(k for k in _DENSE_KEYS if k in self.config)
        if self.dense_ignored:
            log.warning("rag: %s", self._dense_note())
        self.max_top_k = _positive_int(self.config, "max_top_k", 100)
        self.default_top_k = min(_positive_int(self.config, "default_top_k", 5), self.max_top_k)
        raw = self.config.get("corpus_path")
        if raw:
            path = Path(raw)
            self.corpus_path = (path if path.is_absolute() else Path(self.context.project_dir) / path).resolve()
        else:
            self.corpus_path = shipped_path("seeds/rag/corpus.jsonl", self.context.project_dir)
        if not self.corpus_path.is_file():
            raise BackendConfigError(f"resource 'rag': corpus_path {str(self.corpus_path)!r} is not a file")
        index_dir = self.config.get("index_dir")
        if index_dir:
            index_dir = Path(index_dir)
            self.index_dir = index_dir if index_dir.is_absolute() else Path(self.context.project_dir) / index_dir
        else:
            self.index_dir = Path(self.context.data_dir) / "rag"
        self._index: FtsIndex | None = None
        self._fingerprint = ""
        self._built_here = False
        self._checked_at = 0.0
        self._swap_lock = threading.Lock()

    def _dense_note(self) -> str:
        return (f"dense-retrieval option(s) {', '.join(self.dense_ignored)} accepted but not used: this server "
                "retrieves with BM25 over corpus_path (no embedding model ships with AgentFlow, and none is "
                "downloaded)")

    def status_info(self) -> dict:
        """How this backend retrieves, for the warmup status and ``rag:stats``."""
        info: dict = {"retrieval": "bm25"}
        if self.dense_ignored:
            info.update(dense_options_ignored=self.dense_ignored, note=self._dense_note())
        return info

    # -- index lifecycle -----------------------------------------------------------
    def _index_path(self, fingerprint: str) -> Path:
        tag = hashlib.sha256(str(self.corpus_path.resolve()).encode()).hexdigest()[:8]
        return self.index_dir / f"{self.corpus_path.stem}-{tag}-{fingerprint}.sqlite"

    def _load(self) -> dict:
        fingerprint = file_fingerprint(self.corpus_path)
        path = self._index_path(fingerprint)
        try:
            built = build_index(path, read_corpus(self.corpus_path), {"corpus_path": str(self.corpus_path.resolve())})
        except ValueError as err:
            raise BackendNotReady(f"rag corpus cannot be indexed: {err}") from err
        old, self._index = self._index, FtsIndex(path)
        self._fingerprint, self._built_here = fingerprint, built
        self._checked_at = time.monotonic()
        if old is not None:
            old.close()
        if built:
            for stale in path.parent.glob(path.name.rsplit("-", 1)[0] + "-*.sqlite"):
                if stale != path:
                    with contextlib.suppress(OSError):
                        stale.unlink()
        log.info("rag index %s (%s passages, %s)", path, self._index.count(), "built" if built else "cached")
        return {"passages": self._index.count(), "index_path": str(path), "built": built,
                "build_seconds": self._index.meta.get("build_seconds"), **self.status_info()}

    def warmup(self) -> dict:
        with self._swap_lock:
            if self._index is not None:
                return {"passages": self._index.count(), **self.status_info()}
            return self._load()

    def _current(self) -> FtsIndex:
        """The loaded index, reloaded first when the corpus file changed."""
        if self._index is None:
            self.ensure_warm()
        now = time.monotonic()
        if now - self._checked_at > _RECHECK_SECONDS:
            self._checked_at = now
            try:
                changed = file_fingerprint(self.corpus_path) != self._fingerprint
            except OSError as err:
                raise ToolError(f"rag corpus {self.corpus_path} is not readable: {err}") from err
            if changed:
                with self._swap_lock:
                    if file_fingerprint(self.corpus_path) != self._fingerprint:
                        self._load()
        assert self._index is not None
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()

    # -- tools -----------------------------------------------------------------------
    def _top_k(self, top_k) -> int:
        if top_k is None:
            return self.default_top_k
        if top_k > self.max_top_k:
            raise ParamError("top_k", f"must be at most {self.max_top_k}")
        return top_k

    def _search(self, ctx: ToolContext, query: str, top_k: int, param: str) -> list[dict]:
        match = match_query(query)
        if match is None:
            raise ParamError(param, "must contain at least one word to search for")
        try:
            hits = self._current().search(query, top_k, timeout=max(ctx.remaining, 0.05))
        except IndexInterrupted as err:
            raise ToolTimeout(f"rag search timed out: {err}", {"query": query}) from err
        for rank, hit in enumerate(hits, 1):
            hit["rank"] = rank
        return hits

    @tool(
        "search",
        "Search the document corpus with BM25 and return the best passages (id, title, text, score), "
        "and in 'context' the same passages as one text. Use specific keywords; several differently "
        "worded searches often find more.",
        {"properties": {"query": _QUERY_SCHEMA,
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000,
                                  "description": "How many passages to return (default 5)."}},
         "required": ["query"]},
        default_timeout=10.0,
    )
    def search(self, ctx: ToolContext, query: str, top_k: int | None = None) -> dict:
        k = self._top_k(top_k)
        hits = self._search(ctx, query, k, "query")
        # half of the output limit each for the hits and for the same passages in 'context'
        budget = ctx.max_output_bytes - 300
        truncated = _fit_hits(hits, budget // 2)
        context = _fit_text(context_text(hits), budget - len(json.dumps(hits).encode()))
        return {"query": query, "top_k": k, "hits": hits, "context": context, "truncated": truncated}

    @tool(
        "batch_search",
        "Run several searches at once; returns the best passages for each query, in order.",
        {"properties": {"queries": {"type": "array", "items": _QUERY_SCHEMA, "minItems": 1, "maxItems": 64},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 1000,
                                  "description": "Passages per query (default 5)."}},
         "required": ["queries"]},
        default_timeout=30.0,
    )
    def batch_search(self, ctx: ToolContext, queries: list[str], top_k: int | None = None) -> dict:
        k = self._top_k(top_k)
        for i, query in enumerate(queries):
            if match_query(query) is None:
                raise ParamError(f"queries[{i}]", "must contain at least one word to search for")
        results = [{"query": q, "hits": self._search(ctx, q, k, f"queries[{i}]")} for i, q in enumerate(queries)]
        budget = (ctx.max_output_bytes - 300) // (2 * len(results))  # hits and contexts: half each
        truncated = False
        for result in results:
            truncated = _fit_hits(result["hits"], budget) or truncated
        contexts = [_fit_text(context_text(r["hits"]), 2 * budget - len(json.dumps(r["hits"]).encode()))
                    for r in results]
        return {"top_k": k, "results": results, "contexts": contexts, "truncated": truncated}

    @tool("stats", "Describe the corpus: number of passages, where it comes from, how it is indexed.",
          default_timeout=10.0)
    def stats(self, ctx: ToolContext) -> dict:
        index = self._current()
        return {
            "corpus_path": str(self.corpus_path),
            "passages": index.count(),
            "ranking": "bm25 (sqlite fts5)",
            "tokenizer": index.meta.get("tokenizer"),
            "index_path": str(index.path),
            "index_bytes": index.path.stat().st_size,
            "fingerprint": self._fingerprint,
            "build_seconds": index.meta.get("build_seconds"),
            "built_at": index.meta.get("built_at"),
            "default_top_k": self.default_top_k,
            "max_top_k": self.max_top_k,
            **self.status_info(),
        }
