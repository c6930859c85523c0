"""The tool-level parts of reference compatibility are features of our tools, on our own
documented paths too: ``context``/``contexts`` (rag), ``result`` (web, code, ds),
``return_code`` (bash), ``table_names`` and ``schema`` (text2sql), ``return_vars`` and
``enable_llm_summary`` (ds), ``max_image_num``/``max_text_token`` (doc), the ``sql:``
names; and the reference's rag and ds configs start."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from tests.fixtures import REFERENCE_ROOTS, root_id
from tests.support.fake_openai import FakeOpenAI
from tests.support.server import REPO


def _run(server, action: str, params: dict, worker: str | None = None) -> dict:
    body = server.post("/execute", {"worker_id": worker or f"tf_{uuid.uuid4().hex[:8]}", "action": action,
                                    "params": params}).json()
    assert body["code"] == 0, body
    return body["data"]


def test_rag_context_and_contexts(server):
    one = _run(server, "rag:search", {"query": "lru_cache maxsize", "top_k": 2})
    assert one["context"].startswith("[1] " + one["hits"][0]["title"] + "\n")
    assert "\n\n[2] " in one["context"]
    many = _run(server, "rag:batch_search", {"queries": ["lru_cache", "uuid4"], "top_k": 1})
    assert len(many["contexts"]) == 2 and "uuid4" in many["contexts"][1]


def test_web_result_lists_search_results_and_page_text(server):
    found = _run(server, "web:search", {"query": "json module"})
    assert found["result"].startswith('## Search results for "json module"\n1. [')
    assert all(r["url"] in found["result"] for r in found["results"])
    page = _run(server, "web:visit", {"urls": "https://docs.python.org/3/library/json.html"})
    assert page["result"].startswith("## ") and "URL: https://docs.python.org/3/library/json.html" in page["result"]


def test_bash_return_code_on_our_paths(server):
    assert _run(server, "bash:run", {"command": "exit 7"})["return_code"] == 7


def test_code_result_value_and_error_text(server):
    w = f"tf_{uuid.uuid4().hex[:8]}"
    assert server.post("/session/create", {"worker_id": w, "resource_type": "code"}).json()["code"] == 0
    try:
        silent = _run(server, "code:run", {"code": "x = 1"}, w)
        assert silent["result"] == "" and silent["value"] is None
        shown = _run(server, "code:run", {"code": "print('x =', x)"}, w)
        assert shown["result"] == "x = 1\n"
        failed = server.post("/execute", {"worker_id": w, "action": "code:run",
                                          "params": {"code": "print('before')\nx / 0"}}).json()
        assert failed["code"] == 2001
        assert failed["data"]["result"].startswith("before\n") and "ZeroDivisionError" in failed["data"]["result"]
    finally:
        server.post("/session/destroy", {"worker_id": w, "resource_type": "code"})


def test_text2sql_table_names_means_tables(server):
    by_name = _run(server, "text2sql:get_schema", {"db_id": "retail", "table_names": ["Stores"]})
    by_ours = _run(server, "text2sql:get_schema", {"db_id": "retail", "tables": ["stores"]})
    assert by_name == by_ours and list(by_name["schema"]) == ["stores"]
    r = server.post("/execute", {"worker_id": "tf", "action": "text2sql:get_schema",
                                 "params": {"db_id": "retail", "table_names": ["nope"]}}).json()
    assert r["code"] == 1002 and r["data"]["param"] == "table_names" and "nope" in r["message"]
    assert _run(server, "sql-execute", {"db_id": "retail", "query": "SELECT 2 AS two"})["rows"] == [[2]]


def test_doc_read_limits(server):
    doc = "seeds/doc/xml/northwind_trails_report_2024"
    outline = _run(server, "doc:outline", {"seed_path": doc})
    with_figures = [s["section_id"] for s in outline["sections"] if s["figures"] or s["tables"]]
    full = _run(server, "doc:read", {"seed_path": doc, "section_ids": with_figures})
    visuals = sum(len(s["figures"]) + len(s["tables"]) for s in full["sections"])
    assert visuals >= 2 and "visuals_omitted" not in full
    cut = _run(server, "doc:read", {"seed_path": doc, "section_ids": with_figures, "max_image_num": 1})
    assert sum(len(s["figures"]) + len(s["tables"]) for s in cut["sections"]) == 1
    assert cut["visuals_omitted"] == visuals - 1
    short = _run(server, "doc:read", {"seed_path": doc, "section_ids": with_figures[:1], "max_text_token": 10})
    assert short["truncated"] is True and len(short["sections"][0]["text"]) < 10 * 4 + 60


def test_ds_llm_summary_with_a_model(server_factory):
    with FakeOpenAI(lambda req: "Six CSV files of a bookshop; sales has 2400 rows.") as fake:
        srv = server_factory({"resources": {"ds": {"config": {
            "enable_llm_summary": True, "summary_model": "fake-model", "openai_api_key": "k",
            "openai_api_url": fake.base_url, "ds_summary_max_chars": 100}}}})
        out = _run(srv, "ds:inspect_data", {"seed_path": "seeds/ds/bookshop"})
        assert out["summary"] == "Six CSV files of a bookshop; sales has 2400 rows."
        assert out["summary_model"] == "fake-model" and out["files"]
        short = _run(srv, "ds:run_python", {"seed_path": "seeds/ds/bookshop", "code": "print(1)"})
        assert "summary" not in short  # not longer than ds_summary_max_chars
        long = _run(srv, "ds:run_python", {"seed_path": "seeds/ds/bookshop", "code": "print('x' * 500)"})
        assert long["summary"].startswith("Six CSV") and long["result"] == "x" * 500 + "\n"
        prompt = fake.requests[0]["messages"][0]["content"]
        assert "books.csv" in prompt


def test_ds_llm_summary_without_a_model_says_so(server_factory):
    srv = server_factory({"apis": {"ds": {"enable_llm_summary": True, "summary_model": "m", "openai_api_key": ""}}})
    out = _run(srv, "ds:inspect_data", {"seed_path": "seeds/ds/bookshop"})
    assert "summary" not in out and "set openai_api_key" in out["note"]


def _serve_check(config: dict, tmp_path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Build the server app from ``config`` in a child process, as ``agentflow serve``
    does before it serves: every start-up check of the config and backends runs."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code = ("import sys, pathlib\n"
            "from agentflow.config import load_server_config\n"
            "from agentflow.server.app import create_app\n"
            "cfg = load_server_config(sys.argv[1])\n"
            "cfg.data_dir = pathlib.Path(sys.argv[2])\n"
            "create_app(cfg, background=False)\n"
            "print('started')\n")
    return subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "home")], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("root", REFERENCE_ROOTS, ids=root_id)
@pytest.mark.parametrize("name", ["rag_config.json", "ds_config.json"])
def test_reference_rag_and_ds_configs_start(root, name, tmp_path):
    path = root / "configs" / "sandbox-server" / name
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    config = json.loads(path.read_text())
    env = {"RAG_EMBEDDING_MODEL_PATH": "/models/e5", "RAG_INDEX_PATH": "/indexes/e5.index",
           "RAG_CORPUS_PATH": str(REPO / "seeds" / "rag" / "corpus.jsonl"), "OPENAI_API_KEY": "", "OPENAI_API_URL": ""}
    out = _serve_check(config, tmp_path, env)
    assert out.returncode == 0 and "started" in out.stdout, out.stderr[-3000:]
