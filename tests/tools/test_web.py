"""web backend: offline store, Serper/Jina/OpenAI against a local fake, the DB cache."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select

from agentflow.db import make_engine, make_session_factory, upgrade
from agentflow.db.web_cache import WebCacheEntry
from agentflow.tools._html import html_to_text
from agentflow.tools.web.store import PageStore, normalize_url
from agentflow.tools.base import BackendConfigError, BackendContext, ParamError, ToolContext, ToolError
from agentflow.tools.web import WebBackend

from tests.fixtures import REFERENCE_ROOTS, root_id

REPO = Path(__file__).resolve().parents[2]
STORE = REPO / "seeds" / "web"
JSON_URL = "https://docs.python.org/3/library/json.html"

PAGE_HTML = """<html><head><title>Fake page</title><style>p{}</style></head><body>
<nav>Home | About</nav><main><h1>Fake heading</h1><p>The answer is 42.</p></main>
<footer>copyright</footer></body></html>"""


class FakeApis(BaseHTTPRequestHandler):
    """Serper (POST /search), Jina Reader (GET /<url>), Jina Search (GET /?q=),
    OpenAI (POST /v1/chat/completions) and a plain page (GET /page.html)."""

    requests: list[dict] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, status: int, body, ctype: str = "application/json") -> None:
        raw = (json.dumps(body) if not isinstance(body, str) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _record(self, body=None) -> dict:
        entry = {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        type(self).requests.append(entry)
        return entry

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        self._record(body)
        if self.path == "/search":
            if self.headers.get("X-API-KEY") != "serper-key":
                return self._send(403, {"message": "Unauthorized."})
            return self._send(200, {"organic": [
                {"title": f"Result {i} for {body['q']}", "link": f"https://example.org/{i}", "snippet": f"snippet {i}"}
                for i in range(1, body.get("num", 10) + 1)]})
        if self.path == "/v1/chat/completions":
            prompt = body["messages"][0]["content"]
            return self._send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
                                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                        "role": "assistant", "content": f"SUMMARY({len(prompt)})"}}]})
        self._send(404, {"error": "no route"})

    def do_GET(self):  # noqa: N802
        self._record()
        if urlsplit(self.path).path == "/page.html":
            return self._send(200, PAGE_HTML, "text/html; charset=utf-8")
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/page.html")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if self.path == "/image.png":
            return self._send(200, "\x89PNG", "image/png")
        if self.path.startswith("/?"):
            query = parse_qs(urlsplit(self.path).query)["q"][0]
            return self._send(200, {"code": 200, "data": [
                {"title": f"Jina {query}", "url": "https://example.net/a", "description": "desc"}]})
        if self.path.startswith("/http"):
            if self.headers.get("Authorization") != "Bearer jina-key":
                return self._send(401, {"message": "bad key"})
            return self._send(200, {"code": 200, "data": {"title": "Read title", "url": self.path[1:],
                                                          "content": "Read content " * 10}})
        self._send(404, {"error": "no route"})


@pytest.fixture(scope="module")
def fake():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApis)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def calls():
    FakeApis.requests = []
    return FakeApis.requests


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('webdb') / 'db.sqlite'}"
    upgrade(url)
    return make_session_factory(make_engine(url))


@pytest.fixture
def make(tmp_path, db):
    def build(**config) -> WebBackend:
        return WebBackend(config, BackendContext(data_dir=tmp_path / "data", roots=[], session_factory=db,
                                                 project_dir=REPO))
    return build


def ctx(max_output_bytes: int = 1 << 20) -> ToolContext:
    return ToolContext(worker_id="t", timeout=20, max_output_bytes=max_output_bytes)


def cache_rows(db, provider: str) -> int:
    with db() as session:
        return session.scalar(select(func.count()).select_from(WebCacheEntry).where(WebCacheEntry.provider == provider))


# -- offline store ------------------------------------------------------------------

def test_store_has_real_pages_under_canonical_urls():
    store = PageStore(STORE)
    assert len(store) >= 30
    for url in list(store.entries)[:60]:
        assert url.startswith("https://docs.python.org/3/library/")
        page = store.lookup(url)
        assert len(page["text"]) > 400 and page["title"]


def test_local_search(make):
    backend = make(cache_mode="off")
    out = backend.search(ctx(), query="HMAC keyed hashing message authentication", top_k=3)
    assert out["provider"] == "local" and out["cached"] is False
    top = out["results"][0]
    assert top["url"] == "https://docs.python.org/3/library/hmac.html"
    assert set(top) == {"rank", "title", "url", "snippet"} and "HMAC" in top["snippet"]


def test_local_search_list_and_bad_queries(make):
    backend = make(cache_mode="off")
    out = backend.search(ctx(), query=["gzip compression", 'weird "quotes" AND (NEAR'])
    assert [s["query"] for s in out["searches"]] == ["gzip compression", 'weird "quotes" AND (NEAR']
    assert out["searches"][0]["results"][0]["url"].endswith("/gzip.html")
    for bad, param in (("   ", "query"), ("?!", "query")):
        with pytest.raises(ParamError) as err:
            backend.search(ctx(), query=bad)
        assert err.value.param == param
    with pytest.raises(ParamError) as err:
        backend.search(ctx(), query=["ok", " "])
    assert err.value.param == "query[1]"


def test_visit_store_page(make):
    backend = make(cache_mode="off")
    out = backend.visit(ctx(), urls="http://DOCS.python.org/3/library/json.html#json.dumps")
    (page,) = out["pages"]
    assert page["source"] == "store" and page["url"] == JSON_URL
    assert "simplejson" in page["text"] and "<p>" not in page["text"] and "</" not in page["text"]
    assert "Python documentation" not in page["text"]  # header/nav/footer stripped
    assert page["truncated"] is False and page["chars"] == len(page["text"])


def test_visit_limits_and_bad_urls(make):
    backend = make(cache_mode="off", content_limit=500)
    page = backend.visit(ctx(), urls=[JSON_URL])["pages"][0]
    assert len(page["text"]) == 500 and page["truncated"] is True and page["chars"] > 500
    for bad in ("ftp://example.org/x", "not a url", "javascript:alert(1)"):
        with pytest.raises(ParamError):
            backend.visit(ctx(), urls=bad)


def test_visit_unknown_url_without_network(make):
    backend = make(cache_mode="off", allow_network=False)
    with pytest.raises(ToolError, match="not in the offline store"):
        backend.visit(ctx(), urls="https://example.org/nowhere")
    out = backend.visit(ctx(), urls=[JSON_URL, "https://example.org/nowhere"])
    assert "error" in out["pages"][1] and out["pages"][0]["source"] == "store"


def test_direct_fetch(make, fake, calls):
    backend = make(cache_mode="off", allow_private_urls=True)
    page = backend.visit(ctx(), urls=f"{fake}/redirect")["pages"][0]
    assert page["source"] == "direct" and page["title"] == "Fake page" and page["url"].endswith("/page.html")
    assert page["text"] == "# Fake heading\n\nThe answer is 42."
    with pytest.raises(ToolError, match="not text"):
        backend.visit(ctx(), urls=f"{fake}/image.png")
    with pytest.raises(ToolError, match="refusing to connect to 127.0.0.1: a loopback address"):
        make(cache_mode="off").visit(ctx(), urls=f"{fake}/page.html")


# -- cache ----------------------------------------------------------------------------

def test_cache_read_write_then_read_only(make, fake, calls, db):
    url = f"{fake}/page.html?cache-test"
    writer = make(allow_private_urls=True)
    first = writer.visit(ctx(), urls=url)["pages"][0]
    second = writer.visit(ctx(), urls=url)["pages"][0]
    assert (first["cached"], second["cached"]) == (False, True)
    assert len([c for c in calls if c["path"] == "/page.html?cache-test"]) == 1
    reader = make(cache_mode="read_only", allow_private_urls=True)
    assert reader.visit(ctx(), urls=url)["pages"][0]["cached"] is True
    with pytest.raises(ToolError) as err:
        reader.visit(ctx(), urls=f"{fake}/page.html?never-seen")
    assert err.value.data["pages"][0]["cache"] == "miss"
    assert "read_only" in err.value.message
    # answers from the offline store need no network: served even in read_only mode
    assert reader.visit(ctx(), urls=JSON_URL)["pages"][0]["source"] == "store"


def test_cache_keys_normalise_requests(make, db):
    backend = make()
    before = cache_rows(db, "local")
    a = backend.search(ctx(), query="  Temporary   FILES ")
    b = backend.search(ctx(), query="temporary files")
    assert (a["cached"], b["cached"]) == (False, True) and a["results"] == b["results"]
    assert cache_rows(db, "local") == before + 1


def test_cache_off_writes_nothing(make, fake, db):
    before = cache_rows(db, "direct")
    make(cache_mode="off", allow_private_urls=True).visit(ctx(), urls=f"{fake}/page.html?off")
    assert cache_rows(db, "direct") == before


# -- real providers against the fake -------------------------------------------------------

def test_serper(make, fake, calls, db):
    backend = make(serper_api_key="serper-key", serper_url=fake)
    out = backend.search(ctx(), query="python heapq", top_k=3)
    assert out["provider"] == "serper"
    assert [r["url"] for r in out["results"]] == [f"https://example.org/{i}" for i in (1, 2, 3)]
    (req,) = [c for c in calls if c["path"] == "/search"]
    assert req["headers"]["X-API-KEY"] == "serper-key" and req["body"] == {"q": "python heapq", "num": 3}
    assert backend.search(ctx(), query="Python  heapq", top_k=3)["cached"] is True
    assert len([c for c in calls if c["path"] == "/search"]) == 1
    with pytest.raises(ToolError, match="API key was rejected"):
        make(serper_api_key="wrong", serper_url=fake, cache_mode="off").search(ctx(), query="x")


def test_jina_reader_and_search(make, fake, calls):
    backend = make(search_provider="jina", visit_method="jina", jina_api_key="jina-key", jina_url=fake,
                   jina_search_url=fake, cache_mode="off")
    page = backend.visit(ctx(), urls="https://example.com/article")["pages"][0]
    assert page["source"] == "jina" and page["title"] == "Read title" and page["text"].startswith("Read content")
    assert any(c["path"] == "/https://example.com/article" and c["headers"]["Authorization"] == "Bearer jina-key"
               for c in calls)
    results = backend.search(ctx(), query="agent data")["results"]
    assert results[0]["title"] == "Jina agent data"
    with pytest.raises(ToolError, match="API key was rejected"):
        make(visit_method="jina", jina_api_key="bad", jina_url=fake, cache_mode="off").visit(
            ctx(), urls="https://example.com/x")


def test_goal_summary_with_a_configured_model(make, fake, calls):
    backend = make(summary_model="fake-model", openai_api_key="sk-test", openai_api_url=f"{fake}/v1",
                   cache_mode="off")
    page = backend.visit(ctx(), urls=JSON_URL, goal="what is json derived from?")["pages"][0]
    assert page["summary"].startswith("SUMMARY(") and "simplejson" in page["text"]
    (req,) = [c for c in calls if c["path"] == "/v1/chat/completions"]
    assert req["body"]["model"] == "fake-model" and "what is json derived from?" in req["body"]["messages"][0]["content"]
    plain = make(cache_mode="off").visit(ctx(), urls=JSON_URL, goal="anything")
    assert "summary" not in plain["pages"][0] and "no summary model" in plain["note"]


# -- configuration ----------------------------------------------------------------------------

@pytest.mark.parametrize("config, missing", [
    ({"search_provider": "serper"}, "serper_api_key"),
    ({"serper_api_key": ""}, "serper_api_key"),
    ({"visit_method": "jina"}, "jina_api_key"),
    ({"search_provider": "jina"}, "jina_api_key"),
    ({"enable_llm_summary": True}, "summary_model and openai_api_key"),
    ({"cache_mode": "sometimes"}, "cache_mode"),
    ({"serper_key": "x"}, "unknown option"),
])
def test_config_errors_name_the_problem(make, config, missing):
    with pytest.raises(BackendConfigError, match=missing):
        make(**config)


def test_reference_websearch_options_are_accepted(make):
    backend = make(serper_api_key="k1", jina_api_key="k2", visit_method="jina", content_limit=50000,
                   enable_llm_summary=True, summary_model="m", openai_api_key="k3",
                   openai_api_url="https://openrouter.ai/api/v1")
    assert (backend.search_provider, backend.visit_method, backend.summaries) == ("serper", "jina", True)


# -- data -------------------------------------------------------------------------------------------

def test_benchmark_answers_are_on_retrievable_pages(make):
    store = PageStore(STORE)
    backend = make(cache_mode="off")
    tasks = [json.loads(line) for line in open(REPO / "benchmark" / "web.jsonl", encoding="utf-8")]
    assert len(tasks) >= 20 and len({t["id"] for t in tasks}) == len(tasks)
    for task in tasks:
        (url,) = task["evidence"]
        assert task["answer"].lower() in store.lookup(url)["text"].lower(), task["id"]
        urls = [r["url"] for r in backend.search(ctx(), query=task["question"], top_k=5)["results"]]
        assert url in urls, task["id"]


def test_seeds_file():
    seeds = [json.loads(line) for line in open(STORE / "seeds.jsonl", encoding="utf-8")]
    assert len(seeds) >= 10 and all(isinstance(s["content"], str) and s["kwargs"] == {} for s in seeds)


def test_normalize_url():
    assert normalize_url("HTTPS://Docs.Python.org:443/3/x.html#frag") == "https://docs.python.org/3/x.html"
    assert normalize_url("docs.python.org/3/") == "https://docs.python.org/3/"
    assert normalize_url("http://h.example:8080") == "http://h.example:8080/"
    with pytest.raises(ValueError):
        normalize_url("file:///etc/passwd")


def test_html_to_text_without_main():
    page = html_to_text("<title>T</title><script>bad()</script><p>One <b>two</b></p><ul><li>a<li>b</ul>")
    assert page.title == "T" and page.text == "One two\n\n- a\n\n- b"


# -- through the real server ---------------------------------------------------------------

def _execute(server, action: str, params: dict, worker: str = "web-test") -> tuple[int, dict]:
    resp = server.post("/execute", {"worker_id": worker, "action": action, "params": params})
    return resp.status_code, resp.json()


def test_server_local_search_visit_and_cache(server):
    status, body = _execute(server, "web:search", {"query": "Which PEP introduced the secrets module?"})
    assert status == 200 and body["code"] == 0, body
    assert body["data"]["results"][0]["url"] == "https://docs.python.org/3/library/secrets.html"
    status, body = _execute(server, "web-visit", {"urls": ["https://docs.python.org/3/library/secrets.html"]})
    assert body["code"] == 0 and "PEP 506" in body["data"]["pages"][0]["text"]
    status, again = _execute(server, "web:search", {"query": "which PEP introduced the  secrets module?"})
    assert again["data"]["cached"] is True
    factory = make_session_factory(make_engine(server.db_url))
    with factory() as session:
        kinds = {(e.provider, e.kind) for e in session.scalars(select(WebCacheEntry))}
    assert {("local", "search"), ("local", "visit")} <= kinds


@pytest.mark.parametrize("action, params", [
    ("web:search", {"query": ""}),
    ("web:search", {"query": []}),
    ("web:search", {"query": "   "}),
    ("web:search", {"query": ["ok", ""]}),
    ("web:visit", {"urls": "ftp://example.org/file"}),
    ("web:visit", {"urls": []}),
    ("web:visit", {}),
])
def test_server_rejects_bad_parameters(server, action, params):
    status, body = _execute(server, action, params)
    assert (status, body["code"]) == (400, 1002), body


def test_server_provider_without_a_key_fails_at_start(server_factory):
    with pytest.raises(RuntimeError, match="serper_api_key"):
        server_factory(config={"resources": {"web": {"config": {"search_provider": "serper"}}}}, workers=1)
    unset = {"apis": {"websearch": {"visit_method": "jina", "jina_api_key": "${AGENTFLOW_TEST_UNSET_KEY}"}}}
    with pytest.raises(RuntimeError, match="AGENTFLOW_TEST_UNSET_KEY"):
        server_factory(config=unset, workers=1)
    empty = {"apis": {"websearch": {"visit_method": "jina", "jina_api_key": "${AGENTFLOW_TEST_EMPTY_KEY}"}}}
    with pytest.raises(RuntimeError, match="jina_api_key"):
        server_factory(config=empty, workers=1, env={"AGENTFLOW_TEST_EMPTY_KEY": ""})


def test_server_read_only_cache_miss(server_factory):
    srv = server_factory(config={"resources": {"web": {"config": {"cache_mode": "read_only"}}}}, workers=1)
    status, body = _execute(srv, "web:visit", {"urls": "https://example.org/not-cached"})
    assert (status, body["code"]) == (200, 2001), body
    assert "read_only" in body["message"] and body["data"]["pages"][0]["cache"] == "miss"
    status, body = _execute(srv, "web:search", {"query": "gzip"})
    assert body["code"] == 0  # the offline store needs no network


def test_server_serper_through_fake_shares_cache_across_workers(server_factory, fake, calls):
    srv = server_factory(config={"apis": {"websearch": {"serper_api_key": "${SERPER_TEST_KEY}", "serper_url": fake,
                                                        "visit_method": "jina", "jina_api_key": "jina-key",
                                                        "jina_url": fake}}},
                         workers=2, env={"SERPER_TEST_KEY": "serper-key"})
    for _ in range(4):
        status, body = _execute(srv, "web:search", {"query": "agent benchmarks"})
        assert body["code"] == 0 and body["data"]["provider"] == "serper", body
    assert len([c for c in calls if c["path"] == "/search"]) == 1
    status, body = _execute(srv, "web:visit", {"urls": "https://example.com/a"})
    assert body["data"]["pages"][0]["source"] == "jina"


@pytest.mark.parametrize("root", REFERENCE_ROOTS, ids=root_id)
def test_reference_web_config(make, root):
    from agentflow.config import ConfigError, load_server_config

    path = root / "configs" / "sandbox-server" / "web_config.json"
    with pytest.raises(ConfigError, match="SERPER_API_KEY"):
        load_server_config(path, env={})
    env = {"SERPER_API_KEY": "s", "JINA_API_KEY": "j", "OPENROUTER_API_KEY": "o"}
    cfg = load_server_config(path, env=env)
    backend = make(**cfg.resources["web"])
    assert (backend.search_provider, backend.visit_method, backend.summary_model) == (
        "serper", "jina", json.loads(path.read_text())["apis"]["websearch"]["summary_model"])
