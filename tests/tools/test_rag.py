"""rag backend: BM25 over FTS5, index caching, safe queries, the shipped corpus and benchmark."""
from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from agentflow.tools._fts import match_query
from agentflow.tools.base import BackendConfigError, BackendContext, BackendNotReady, ParamError, ToolContext
from agentflow.tools.rag import RagBackend
from tests.fixtures import REFERENCE_ROOTS, root_id

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "seeds" / "rag" / "corpus.jsonl"

NASTY_QUERIES = [
    'what does "assert" do?', "AND OR NOT", "NEAR(a b)", "title:json", "json*", "^start", "a - b + c",
    "'; DROP TABLE docs; --", '"unbalanced', "(((", "ünïcödé naïve café", "x" * 3000, "日本語のテキスト",
    "col:val OR {title text}: x", "\\ \\\\ \x00 null",
]


def ctx(max_output_bytes: int = 1 << 20, timeout: float = 10.0) -> ToolContext:
    return ToolContext(worker_id="t", timeout=timeout, max_output_bytes=max_output_bytes)


def make(tmp_path: Path, **config) -> RagBackend:
    return RagBackend(config, BackendContext(data_dir=tmp_path / "data", roots=[], project_dir=REPO))


def write_corpus(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> RagBackend:
    backend = make(tmp_path_factory.mktemp("rag"))
    backend.ensure_warm()
    return backend


def test_search_returns_ranked_hits(shipped):
    out = shipped.search(ctx(), query="heapq nsmallest", top_k=3)
    assert [h["rank"] for h in out["hits"]] == [1, 2, 3]
    top = out["hits"][0]
    assert top["id"] == "module:heapq.nsmallest#0"
    assert set(top) >= {"id", "title", "text", "score"}
    scores = [h["score"] for h in out["hits"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_two_stage_ranking_matches_exact_bm25(shipped, monkeypatch):
    """A query with common words ("return", "method", "function" are in >10% of the
    passages) takes the two-stage path; its scores must equal FTS5's own bm25."""
    from agentflow.tools import _fts

    query = "return the smallest item of a heap method function"
    common_words = []
    add_common = _fts.FtsIndex._add_common
    monkeypatch.setattr(_fts.FtsIndex, "_add_common",
                        lambda self, hits, common: (common_words.extend(common), add_common(self, hits, common))[1])
    two_stage = shipped.search(ctx(), query=query, top_k=5)["hits"]
    assert "return" in common_words  # the two-stage path ran
    monkeypatch.setattr(_fts, "EXACT_POSTINGS", 10**12)
    exact = shipped.search(ctx(), query=query, top_k=5)["hits"]
    assert [(h["id"], h["score"]) for h in two_stage] == [(h["id"], h["score"]) for h in exact]


def test_default_top_k(shipped):
    assert len(shipped.search(ctx(), query="context manager")["hits"]) == 5


@pytest.mark.parametrize("query", NASTY_QUERIES)
def test_free_text_never_breaks_fts(shipped, query):
    if match_query(query) is None:
        with pytest.raises(ParamError):
            shipped.search(ctx(), query=query)
    else:
        assert isinstance(shipped.search(ctx(), query=query)["hits"], list)


@pytest.mark.parametrize("query", ["", "   ", "?!", '"" ()'])
def test_query_without_words_is_a_param_error(shipped, query):
    with pytest.raises(ParamError) as err:
        shipped.search(ctx(), query=query)
    assert err.value.param == "query"


def test_top_k_above_limit(shipped):
    with pytest.raises(ParamError) as err:
        shipped.search(ctx(), query="json", top_k=101)
    assert err.value.param == "top_k"


def test_batch_search(shipped):
    out = shipped.batch_search(ctx(), queries=["lru_cache maxsize", "uuid4 random"], top_k=2)
    assert [r["query"] for r in out["results"]] == ["lru_cache maxsize", "uuid4 random"]
    assert out["results"][0]["hits"][0]["id"] == "module:functools.lru_cache#0"
    with pytest.raises(ParamError) as err:
        shipped.batch_search(ctx(), queries=["json", "  "])
    assert err.value.param == "queries[1]"


def test_output_is_capped(shipped):
    out = shipped.search(ctx(max_output_bytes=4000), query="statement expression", top_k=20)
    assert out["truncated"] is True
    assert len(json.dumps(out).encode()) < 4000 + 300
    cut = [h for h in out["hits"] if h.get("text_truncated")]
    assert cut and all(h["text_chars"] > len(h["text"]) - 2 for h in cut)


def test_stats(shipped):
    stats = shipped.stats(ctx())
    assert stats["passages"] == sum(1 for _ in open(SHIPPED))
    assert stats["passages"] > 3000
    assert Path(stats["index_path"]).exists() and stats["ranking"].startswith("bm25")


def test_index_is_cached_and_rebuilt_when_corpus_changes(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", [{"id": "a", "title": "Alpha", "text": "apples and pears"}])
    first = make(tmp_path, corpus_path=str(corpus))
    assert first.ensure_warm()["built"] is True
    second = make(tmp_path, corpus_path=str(corpus))
    assert second.ensure_warm()["built"] is False
    write_corpus(corpus, [{"id": "b", "title": "Beta", "text": "bananas"}, {"id": "c", "title": "C", "text": "x"}])
    os.utime(corpus, ns=(time.time_ns(), time.time_ns() + 10**9))
    second._checked_at = 0.0  # skip the once-a-second recheck throttle
    hits = second.search(ctx(), query="bananas")["hits"]
    assert [h["id"] for h in hits] == ["b"]
    assert second.stats(ctx())["passages"] == 2
    assert len(list((tmp_path / "data" / "rag").glob("*.sqlite"))) == 1  # the stale index is gone


def _warm_in_child(args) -> bool:
    data_dir, corpus = args
    backend = RagBackend({"corpus_path": corpus}, BackendContext(data_dir=Path(data_dir), roots=[]))
    return backend.ensure_warm()["built"]


def test_concurrent_warmups_build_once(tmp_path):
    docs = [{"id": str(i), "title": f"t{i}", "text": f"word{i} common text " * 20} for i in range(3000)]
    corpus = write_corpus(tmp_path / "c.jsonl", docs)
    with multiprocessing.get_context("fork").Pool(4) as pool:
        built = pool.map(_warm_in_child, [(str(tmp_path / "data"), str(corpus))] * 4)
    assert sorted(built) == [False, False, False, True]
    assert not list((tmp_path / "data" / "rag").glob(".*.tmp"))


def test_flashrag_contents_format(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", [{"id": "0", "contents": '"Paris"\nParis is the capital of France.'}])
    backend = make(tmp_path, corpus_path=str(corpus))
    hit = backend.search(ctx(), query="capital of France")["hits"][0]
    assert hit["title"] == "Paris" and hit["text"] == "Paris is the capital of France."


def test_bad_corpus_line_names_the_line(tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"id": 1, "text": "ok"}\n{not json}\n')
    with pytest.raises(BackendNotReady, match="line 2"):
        make(tmp_path, corpus_path=str(corpus)).ensure_warm()


def test_config_errors(tmp_path):
    with pytest.raises(BackendConfigError, match="corpus_path"):
        make(tmp_path, corpus_path=str(tmp_path / "missing.jsonl"))
    dense = make(tmp_path, model_name="e5-base", device="cpu")  # accepted, not used: BM25 it is
    assert dense.status_info()["dense_options_ignored"] == ["device", "model_name"]
    with pytest.raises(BackendConfigError, match="unknown option"):
        make(tmp_path, corpus="x")
    with pytest.raises(BackendConfigError, match="default_top_k"):
        make(tmp_path, default_top_k=0)


def test_benchmark_answers_are_in_retrievable_passages(shipped):
    passages = {p["id"]: p for p in map(json.loads, open(SHIPPED, encoding="utf-8"))}
    tasks = [json.loads(line) for line in open(REPO / "benchmark" / "rag.jsonl", encoding="utf-8")]
    assert len(tasks) >= 20 and len({t["id"] for t in tasks}) == len(tasks)
    for task in tasks:
        (evidence,) = task["evidence"]
        assert task["answer"].lower() in passages[evidence]["text"].lower(), task["id"]
        hits = shipped.search(ctx(), query=task["question"], top_k=10)["hits"]
        assert evidence in [h["id"] for h in hits], task["id"]


def test_seeds_file():
    seeds = [json.loads(line) for line in open(REPO / "seeds" / "rag" / "seeds.jsonl", encoding="utf-8")]
    assert len(seeds) >= 10 and all(isinstance(s["content"], str) and s["kwargs"] == {} for s in seeds)


def test_build_corpus_command(tmp_path):
    from agentflow.cli import main

    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "intro.md").write_text("# Guide\n\nWelcome text.\n\n## Install\n\nRun pip install foo.\n")
    (docs / "notes.txt").write_text("First paragraph.\n\nSecond paragraph about zebras.\n")
    (docs / "sub" / "page.html").write_text(
        "<html><head><title>Page</title><script>x()</script></head><body><nav>menu</nav>"
        "<main><h1>Heading</h1><p>Body about giraffes.</p></main></body></html>")
    (docs / "image.png").write_bytes(b"\x89PNG")
    out = tmp_path / "corpus.jsonl"
    assert main(["rag", "build-corpus", str(docs), "-o", str(out)]) == 0
    rows = [json.loads(line) for line in open(out)]
    assert {r["id"].split("#")[0] for r in rows} == {"intro.md", "notes.txt", "sub/page.html"}
    by_text = {r["text"]: r for r in rows}
    assert by_text["Run pip install foo."]["title"] == "Guide — Install"
    assert any("giraffes" in r["text"] and r["title"].startswith("Page") for r in rows)
    assert not any("menu" in r["text"] or "x()" in r["text"] for r in rows)
    backend = make(tmp_path, corpus_path=str(out))
    assert backend.search(ctx(), query="zebras")["hits"][0]["id"] == "notes.txt#0"
    assert main(["rag", "build-corpus", str(tmp_path / "nope"), "-o", str(out)]) == 2


def test_python_docs_corpus_regenerates(tmp_path):
    from agentflow.cli import main

    out = tmp_path / "corpus.jsonl"
    assert main(["rag", "build-corpus", "--python-docs", "-o", str(out)]) == 0
    fresh = {json.loads(line)["id"] for line in open(out)}
    shipped = {json.loads(line)["id"] for line in open(SHIPPED)}
    assert len(fresh) == sum(1 for _ in open(out))  # ids are unique
    assert len(fresh & shipped) > 0.9 * len(shipped)
    again = tmp_path / "again.jsonl"
    assert main(["rag", "build-corpus", "--python-docs", "-o", str(again)]) == 0
    assert again.read_bytes() == out.read_bytes()  # deterministic (no object addresses, stable order)


# -- through the real server ---------------------------------------------------------------

def _execute(server, action: str, params: dict, worker: str = "rag-test") -> tuple[int, dict]:
    resp = server.post("/execute", {"worker_id": worker, "action": action, "params": params})
    return resp.status_code, resp.json()


def test_server_search_and_aliases(server):
    status, body = _execute(server, "rag:search", {"query": "What is the default maxsize of lru_cache?", "top_k": 3})
    assert status == 200 and body["code"] == 0, body
    assert body["data"]["hits"][0]["id"] == "module:functools.lru_cache#0"
    assert body["meta"]["tool"] == "rag:search" and body["meta"]["temporary_session"] is False
    status, body = _execute(server, "rag-batch_search", {"queries": ["heapq", "uuid4"], "top_k": 1})
    assert body["code"] == 0 and len(body["data"]["results"]) == 2
    status, body = _execute(server, "rag_stats", {})
    assert body["code"] == 0 and body["data"]["passages"] > 3000


@pytest.mark.parametrize("params, param", [
    ({"query": ""}, "query"),
    ({"query": "?? !!"}, "query"),
    ({}, "query"),
    ({"query": "json", "top_k": 0}, "top_k"),
    ({"query": "json", "top_k": 500}, "top_k"),
    ({"query": "json", "k": 3}, None),
])
def test_server_rejects_bad_parameters(server, params, param):
    status, body = _execute(server, "rag:search", params)
    assert (status, body["code"]) == (400, 1002), body
    if param:
        assert param in body["message"]


def test_server_batch_with_a_blank_query(server):
    status, body = _execute(server, "rag:batch_search", {"queries": ["json", " "]})
    assert (status, body["code"]) == (400, 1002) and "queries[1]" in body["message"]


def test_server_tool_list_has_schemas(server):
    tools = {t["name"]: t for t in server.get("/tools").json()["data"]["tools"]}
    assert tools["rag:search"]["parameters"]["required"] == ["query"]
    names = [t["function"]["name"] for t in server.get("/tools", params={"format": "openai"}).json()["data"]["tools"]]
    assert {"rag-search", "rag-batch_search", "rag-stats"} <= set(names)


def test_server_with_custom_corpus_and_missing_corpus(server_factory, tmp_path):
    corpus = write_corpus(tmp_path / "mine.jsonl", [{"id": "x1", "title": "Zebra", "text": "Zebras have stripes."}])
    srv = server_factory(config={"resources": {"rag": {"enabled": True, "config": {"corpus_path": str(corpus)}}},
                                 "warmup": {"enabled": True, "resources": ["rag"]}}, workers=1)
    status, body = _execute(srv, "rag:search", {"query": "stripes"})
    assert body["data"]["hits"][0]["id"] == "x1"
    with pytest.raises(RuntimeError, match="corpus_path"):
        server_factory(config={"resources": {"rag": {"config": {"corpus_path": str(tmp_path / "none.jsonl")}}}},
                       workers=1)


def test_shipped_config_loads():
    from agentflow.config import load_server_config

    cfg = load_server_config(REPO / "configs" / "sandbox-server" / "rag.json", env={})
    backend = RagBackend(cfg.resources["rag"], BackendContext(data_dir=Path("/nonexistent"), roots=[],
                                                              project_dir=REPO))
    assert backend.corpus_path == SHIPPED.resolve() and backend.default_top_k == 5


@pytest.mark.parametrize("root", REFERENCE_ROOTS, ids=root_id)
def test_reference_rag_config_starts_with_bm25(tmp_path, root):
    from agentflow.config import ConfigError, load_server_config

    REFERENCE = root / "configs" / "sandbox-server"

    with pytest.raises(ConfigError, match="RAG_EMBEDDING_MODEL_PATH"):
        load_server_config(REFERENCE / "rag_config.json", env={})
    env = {"RAG_EMBEDDING_MODEL_PATH": "e5", "RAG_INDEX_PATH": "faiss.index", "RAG_CORPUS_PATH": str(SHIPPED)}
    cfg = load_server_config(REFERENCE / "rag_config.json", env=env)
    backend = make(tmp_path, **cfg.resources["rag"])
    info = backend.status_info()
    assert info["retrieval"] == "bm25" and "model_name" in info["dense_options_ignored"]
    assert "BM25" in info["note"] and info == {k: v for k, v in backend.stats(ctx()).items() if k in info}
    assert backend.search(ctx(), query="lru_cache")["hits"]
