"""Web search and page reading, offline or through real APIs, with every answer cached.

Search providers (``search_provider``):

- ``local`` (default): the offline page store (``store_dir``, default the shipped
  ``seeds/web``: Python module docs under their ``https://docs.python.org/3/…`` URLs),
  searched with BM25 in sqlite FTS5.
- ``serper``: Google results from serper.dev (needs ``serper_api_key``); the default
  when a ``serper_api_key`` is configured.
- ``jina``: Jina Search (needs ``jina_api_key``).

Page reading (``visit_method``): ``local`` (default: the store, else a direct HTTP fetch
when ``allow_network`` is on), ``direct`` (always fetch) or ``jina`` (Jina Reader, needs
``jina_api_key``). Direct fetches go through :mod:`agentflow.tools.netguard`: each hop
is resolved once, checked and connected to the checked address; loopback, private,
link-local and other non-public addresses are refused unless listed in
``allowed_networks`` (CIDRs) or ``allow_private_urls`` is true.

Every answer is stored in the ``web_cache`` table keyed by provider and normalised
request. ``cache_mode``: ``read_write`` (default) serves and stores, ``read_only`` serves
cached answers and the offline store but never calls out (a miss is an error),
``off`` neither reads nor writes.

``goal`` on ``web:visit`` adds a model summary when ``summary_model`` and
``openai_api_key`` are configured (and ``enable_llm_summary`` is not false). The option
names of AgentFlow's ``apis.websearch`` section are accepted as they are.

Both tools also answer ``result``: the same answer as one Markdown text for a model's
prompt (search: title, URL and snippet of each result; visit: each page's summary, or
its text when there is no summary), capped at the output limit like any other text.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from .._fts import FtsIndex, IndexInterrupted, build_index, file_fingerprint, match_query
from .providers import ProviderError, fetch_page, jina_read, jina_search, serper_search, summarize
from .store import PageStore, normalize_url
from ..netguard import NetPolicy, UnsafeUrl, parse_url, reject_unsafe_chars
from ..base import Backend, BackendConfigError, BackendNotReady, ParamError, ToolContext, ToolError, ToolTimeout, tool
from ..rag import shipped_path

__all__ = ["WebBackend"]

log = logging.getLogger(__name__)

CACHE_MODES = ("read_write", "read_only", "off")
SEARCH_PROVIDERS = ("local", "serper", "jina")
VISIT_METHODS = ("local", "direct", "jina")
_DEFAULTS = {
    "serper_url": "https://google.serper.dev",
    "jina_url": "https://r.jina.ai",
    "jina_search_url": "https://s.jina.ai",
    "content_limit": 50_000,
    "max_results": 10,
    "fetch_timeout": 20.0,
    "max_fetch_bytes": 5_000_000,
    "cache_ttl": 0,
}
_MAX_ITEMS = 10
_STR_OR_LIST = {
    "oneOf": [
        {"type": "string", "minLength": 1, "maxLength": 2000},
        {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 2000},
         "minItems": 1, "maxItems": _MAX_ITEMS},
    ]
}


def _key(provider: str, kind: str, request: dict) -> str:
    raw = json.dumps([provider, kind, request], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def _normalize_query(query: str) -> str:
    return re.sub(r"\s+", " ", query).strip().lower()


def _cap(text: str, max_bytes: int) -> str:
    raw = text.encode("utf-8")
    return text if len(raw) <= max_bytes else raw[:max_bytes].decode("utf-8", "ignore") + " …"


def search_text(search: dict) -> str:
    """One search's results as Markdown: a numbered list of title, URL and snippet."""
    head = f"## Search results for \"{search['query']}\""
    if search.get("error"):
        return f"{head}\nSearch failed: {search['error']}"
    if not search["results"]:
        return f"{head}\nNo results."
    lines = [head]
    for i, hit in enumerate(search["results"], 1):
        lines.append(f"{i}. [{hit.get('title') or hit.get('url')}]({hit.get('url', '')})")
        if hit.get("snippet"):
            lines.append(f"   {hit['snippet']}")
    return "\n".join(lines)


def page_text(page: dict) -> str:
    """One visited page as Markdown: its title and URL over its summary (or its text)."""
    if page.get("error"):
        return f"## {page['url']}\nCould not read this page: {page['error']}"
    body = page.get("summary") or page.get("text") or "(the page has no text)"
    return f"## {page.get('title') or page['url']}\nURL: {page['url']}\n\n{body}"


class WebBackend(Backend):
    """Web search and page reading (offline store, Serper, Jina) with a database cache."""

    name = "web"
    description = "Web search and page reading"
    uses_sessions = False
    config_keys = frozenset({
        "search_provider", "provider", "visit_method", "serper_api_key", "jina_api_key", "serper_url",
        "jina_url", "jina_search_url", "store_dir", "cache_mode", "cache_ttl", "content_limit", "max_results",
        "fetch_timeout", "max_fetch_bytes", "allow_network", "allow_private_urls", "allowed_networks",
        "enable_llm_summary",
        "summary_model", "openai_api_key", "openai_api_url",
    })

    # -- configuration -------------------------------------------------------------
    def check_config(self) -> None:
        super().check_config()
        cfg = self.config

        def fail(message: str) -> None:
            raise BackendConfigError(f"resource 'web': {message}")

        def number(key: str) -> float:
            value = cfg.get(key, _DEFAULTS[key])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                fail(f"option {key} must be a non-negative number, got {value!r}")
            return value

        self.search_provider = cfg.get("search_provider") or cfg.get("provider") or (
            "serper" if "serper_api_key" in cfg else "local")
        if self.search_provider not in SEARCH_PROVIDERS:
            fail(f"search_provider must be one of {', '.join(SEARCH_PROVIDERS)}, got {self.search_provider!r}")
        self.visit_method = cfg.get("visit_method") or "local"
        if self.visit_method not in VISIT_METHODS:
            fail(f"visit_method must be one of {', '.join(VISIT_METHODS)}, got {self.visit_method!r}")
        self.cache_mode = cfg.get("cache_mode", "read_write")
        if self.cache_mode not in CACHE_MODES:
            fail(f"cache_mode must be one of {', '.join(CACHE_MODES)}, got {self.cache_mode!r}")
        self.serper_key = str(cfg.get("serper_api_key") or "")
        self.jina_key = str(cfg.get("jina_api_key") or "")
        if self.search_provider == "serper" and not self.serper_key:
            fail("search_provider 'serper' needs serper_api_key (set it in the config, e.g. \"${SERPER_API_KEY}\")")
        if "jina" in (self.search_provider, self.visit_method) and not self.jina_key:
            which = "search_provider" if self.search_provider == "jina" else "visit_method"
            fail(f"{which} 'jina' needs jina_api_key (set it in the config, e.g. \"${{JINA_API_KEY}}\")")
        self.urls = {k: str(cfg.get(k) or _DEFAULTS[k]) for k in ("serper_url", "jina_url", "jina_search_url")}
        self.content_limit = int(number("content_limit")) or _DEFAULTS["content_limit"]
        self.max_results = max(1, int(number("max_results")))
        self.fetch_timeout = float(number("fetch_timeout")) or _DEFAULTS["fetch_timeout"]
        self.max_fetch_bytes = int(number("max_fetch_bytes")) or _DEFAULTS["max_fetch_bytes"]
        self.cache_ttl = float(number("cache_ttl"))
        self.allow_network = bool(cfg.get("allow_network", True))
        self.allow_private = bool(cfg.get("allow_private_urls", False))
        try:
            self.policy = NetPolicy.from_config(cfg)
        except ValueError as err:
            fail(str(err))
        self.summary_model = str(cfg.get("summary_model") or "")
        self.summary_key = str(cfg.get("openai_api_key") or "")
        self.summary_url = str(cfg.get("openai_api_url") or "") or None
        self.summaries = bool(cfg.get("enable_llm_summary", bool(self.summary_model)))
        if self.summaries and not (self.summary_model and self.summary_key):
            missing = [k for k, v in (("summary_model", self.summary_model), ("openai_api_key", self.summary_key))
                       if not v]
            fail(f"enable_llm_summary needs {' and '.join(missing)} (or set enable_llm_summary to false)")
        store = cfg.get("store_dir")
        if store:
            store = Path(store)
            self.store_dir = store if store.is_absolute() else Path(self.context.project_dir) / store
        else:
            self.store_dir = shipped_path("seeds/web", self.context.project_dir)
        self.uses_store = self.search_provider == "local" or self.visit_method == "local"
        if self.uses_store and not (self.store_dir / "manifest.jsonl").is_file():
            fail(f"store_dir {str(self.store_dir)!r} has no manifest.jsonl")
        if self.cache_mode != "off" and self.context.session_factory is None:
            self.cache_mode = "off"
        self.store: PageStore | None = None
        self.index: FtsIndex | None = None
        self._load_lock = threading.Lock()

    # -- warmup --------------------------------------------------------------------
    def warmup(self) -> dict:
        if not self.uses_store:
            return {"search_provider": self.search_provider, "visit_method": self.visit_method}
        with self._load_lock:
            if self.store is None:
                try:
                    store = PageStore(self.store_dir)
                except (OSError, ValueError) as err:
                    raise BackendNotReady(f"web store cannot be read: {err}") from err
                fingerprint = file_fingerprint(*store.fingerprint_files())
                path = Path(self.context.data_dir) / "web" / f"store-{fingerprint}.sqlite"
                build_index(path, store.documents(), {"store_dir": str(self.store_dir)})
                self.index, self.store = FtsIndex(path), store
        return {"pages": len(self.store), "search_provider": self.search_provider, "visit_method": self.visit_method}

    def _store(self) -> PageStore:
        if self.store is None:
            self.ensure_warm()
        assert self.store is not None
        return self.store

    # -- cache -----------------------------------------------------------------------
    def _cached(self, provider: str, kind: str, request: dict, produce, *, external: bool) -> tuple[dict, bool]:
        """Answer from the cache, else ``produce()`` (stored when allowed).

        ``external`` answers need the network or an API; in ``read_only`` mode a miss on
        one is an error, while answers computed from the offline store are served.
        """
        key = _key(provider, kind, request)
        if self.cache_mode != "off":
            from ...db.web_cache import get_entry

            try:
                with self.context.session_factory() as session:
                    entry = get_entry(session, key)
                    if entry is not None:
                        return entry.response, True
            except SQLAlchemyError as err:
                log.warning("web cache read failed: %s", err)
        if self.cache_mode == "read_only" and external:
            raise ToolError(
                f"no cached answer for this {kind} ({provider}) and cache_mode is read_only",
                {"cache": "miss", "provider": provider, "request": request},
            )
        response = produce()
        if self.cache_mode == "read_write":
            from ...db.web_cache import put_entry

            try:
                with self.context.session_factory() as session:
                    put_entry(session, key, provider, kind, request, response, self.cache_ttl or None)
                    session.commit()
            except SQLAlchemyError as err:
                log.warning("web cache write failed: %s", err)
        return response, False

    # -- search ----------------------------------------------------------------------
    def _search_one(self, ctx: ToolContext, query: str, top_k: int, param: str) -> dict:
        normalized = _normalize_query(query)
        if not normalized:
            raise ParamError(param, "must not be blank")
        provider = self.search_provider
        request = {"q": normalized, "num": top_k}

        def produce() -> dict:
            timeout = max(0.5, min(self.fetch_timeout, ctx.remaining))
            try:
                if provider == "serper":
                    results = serper_search(query.strip(), api_key=self.serper_key, base_url=self.urls["serper_url"],
                                            num=top_k, timeout=timeout)
                elif provider == "jina":
                    results = jina_search(query.strip(), api_key=self.jina_key,
                                          base_url=self.urls["jina_search_url"], num=top_k, timeout=timeout)
                else:
                    results = self._local_search(ctx, query, top_k, param)
            except ProviderError as err:
                raise ToolError(str(err), {"provider": provider, "query": query, "status": err.status}) from err
            return {"results": [{"rank": i, **r} for i, r in enumerate(results, 1)]}

        answer, cached = self._cached(provider, "search", request, produce, external=provider != "local")
        return {"query": query, "provider": provider, "results": answer["results"], "cached": cached}

    def _local_search(self, ctx: ToolContext, query: str, top_k: int, param: str) -> list[dict]:
        match = match_query(query)
        if match is None:
            raise ParamError(param, "must contain at least one word to search for")
        self._store()
        assert self.index is not None
        try:
            hits = self.index.search(query, top_k, timeout=max(ctx.remaining, 0.05), with_snippet=True)
        except IndexInterrupted as err:
            raise ToolTimeout(f"web search timed out: {err}", {"query": query}) from err
        return [{"title": h["title"], "url": h["id"], "snippet": re.sub(r"\s+", " ", h["snippet"]).strip()}
                for h in hits]

    @tool(
        "search",
        "Search the web. Give one query or a list of up to 10 queries; each result has a title, URL and "
        "snippet ('result' lists them as one text). Read promising pages with web:visit.",
        {"properties": {"query": {**_STR_OR_LIST, "description": "A search query, or a list of queries."},
                        "top_k": {"type": "integer", "minimum": 1, "maximum": 20,
                                  "description": "Results per query (default 10)."}},
         "required": ["query"]},
        default_timeout=30.0,
    )
    def search(self, ctx: ToolContext, query, top_k: int | None = None) -> dict:
        k = top_k or self.max_results
        if isinstance(query, str):
            one = self._search_one(ctx, query, k, "query")
            return {**one, "result": _cap(search_text(one), ctx.max_output_bytes)}
        for i, q in enumerate(query):
            if not _normalize_query(q):
                raise ParamError(f"query[{i}]", "must not be blank")
        searches, errors = [], 0
        for i, q in enumerate(query):
            try:
                searches.append(self._search_one(ctx, q, k, f"query[{i}]"))
            except ToolTimeout:
                raise
            except ToolError as err:
                errors += 1
                searches.append({"query": q, "provider": self.search_provider, "results": [], "error": err.message})
        if errors == len(searches):
            raise ToolError(f"all {errors} searches failed: {searches[0]['error']}", {"searches": searches})
        text = "\n\n".join(search_text(one) for one in searches)
        return {"provider": self.search_provider, "searches": searches, "result": _cap(text, ctx.max_output_bytes)}

    # -- visit -----------------------------------------------------------------------
    @staticmethod
    def _checked_url(url: str, param: str) -> str:
        """The normalised URL, refused (ParamError) when malformed or ambiguous: a
        backslash, control character, userinfo or numeric IPv4 form never reaches a fetch."""
        try:
            reject_unsafe_chars(url.strip())
            normalized = normalize_url(url)
            parse_url(normalized)
        except (ValueError, UnsafeUrl) as err:
            raise ParamError(param, str(err)) from None
        return normalized

    def _read(self, ctx: ToolContext, url: str, param: str) -> dict:
        """Page text of one URL: ``{url, title, text, chars, source, cached}``."""
        normalized = self._checked_url(url, param)
        if self.visit_method == "local":
            page = self._store().lookup(normalized)
            if page is not None:
                text = page["text"]
                page.update(text=text[: self.content_limit], chars=len(text), source="store")
                answer, cached = self._cached("local", "visit", {"url": normalized}, lambda: page, external=False)
                return {**answer, "cached": cached}
            if not self.allow_network:
                raise ToolError(f"{url} is not in the offline store and network access is off (allow_network)",
                                {"url": url})
        method = "jina" if self.visit_method == "jina" else "direct"

        def produce() -> dict:
            timeout = max(0.5, min(self.fetch_timeout, ctx.remaining))
            try:
                if method == "jina":
                    page = jina_read(normalized, api_key=self.jina_key, base_url=self.urls["jina_url"], timeout=timeout)
                else:
                    page = fetch_page(normalized, timeout=timeout, max_bytes=self.max_fetch_bytes,
                                      policy=self.policy)
            except ProviderError as err:
                raise ToolError(str(err), {"url": url, "status": err.status}) from err
            text = page["text"]
            return {"url": page["url"], "title": page["title"], "text": text[: self.content_limit],
                    "chars": len(text), "source": method}

        answer, cached = self._cached(method, "visit", {"url": normalized}, produce, external=True)
        return {**answer, "cached": cached}

    def _summary(self, ctx: ToolContext, page: dict, goal: str) -> tuple[str, bool]:
        request = {"url": normalize_url(page["url"]), "goal": goal.strip(), "model": self.summary_model,
                   "chars": page["chars"]}

        def produce() -> dict:
            try:
                text = summarize(page["text"], goal, model=self.summary_model, api_key=self.summary_key,
                                 base_url=self.summary_url, timeout=max(1.0, ctx.remaining))
            except ProviderError as err:
                raise ToolError(str(err), {"url": page["url"]}) from err
            return {"summary": text}

        answer, cached = self._cached("summary", "summary", request, produce, external=True)
        return answer["summary"], cached

    @tool(
        "visit",
        "Read web pages: give one URL or a list of up to 10; returns each page's clean text. With 'goal' "
        "(what you are looking for), a model summary focused on that goal is added when one is configured.",
        {"properties": {"urls": {**_STR_OR_LIST, "description": "http(s) URL or list of URLs."},
                        "goal": {"type": "string", "maxLength": 2000,
                                 "description": "What information you need from the pages."}},
         "required": ["urls"]},
        default_timeout=60.0,
    )
    def visit(self, ctx: ToolContext, urls, goal: str | None = None) -> dict:
        items = [urls] if isinstance(urls, str) else list(urls)
        params = ["urls"] if isinstance(urls, str) else [f"urls[{i}]" for i in range(len(items))]
        for url, param in zip(items, params):
            self._checked_url(url, param)
        pages, failures = [], 0
        for url, param in zip(items, params):
            try:
                page = self._read(ctx, url, param)
                if goal and goal.strip() and self.summaries:
                    page["summary"], page["summary_cached"] = self._summary(ctx, page, goal)
            except ToolTimeout:
                raise
            except ToolError as err:
                failures += 1
                page = {"url": url, "error": err.message, **{k: v for k, v in err.data.items() if k == "cache"}}
            pages.append(page)
        if failures == len(pages):
            first = pages[0]
            raise ToolError(first["error"] if len(pages) == 1 else f"all {failures} pages failed: {first['error']}",
                            {"pages": pages})
        budget = max(1000, (ctx.max_output_bytes - 500) // len(pages))
        truncated = False
        for page in pages:
            text = page.get("text")
            if text is None:
                continue
            cut = len(text.encode()) > budget
            if cut:
                page["text"] = text.encode()[:budget].decode("utf-8", "ignore") + " …"
            page["truncated"] = cut or len(text) < page.get("chars", 0)
            truncated = truncated or page["truncated"]
        text = _cap("\n\n".join(page_text(page) for page in pages), ctx.max_output_bytes)
        if goal and not self.summaries:
            note = "no summary model is configured; the full text is returned"
            return {"pages": pages, "goal": goal, "note": note, "truncated": truncated, "result": text}
        return {"pages": pages, "truncated": truncated, "result": text}

    @tool("stats", "Describe the web backend: providers, cache mode and the offline store.", hidden=True)
    def stats(self, ctx: ToolContext) -> dict:
        info = {"search_provider": self.search_provider, "visit_method": self.visit_method,
                "cache_mode": self.cache_mode, "allow_network": self.allow_network,
                "summaries": self.summaries}
        if self.uses_store:
            info.update(store_dir=str(self.store_dir), pages=len(self._store()))
        return info

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
