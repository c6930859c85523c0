"""doc backend: unit tests on the four formats, the shipped documents and the reference config."""
from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agentflow.config import ConfigError, load_server_config
from agentflow.tools.base import BackendConfigError, BackendContext, ParamError, ToolContext
from agentflow.tools._docparse import load_document
from agentflow.tools.doc import DocBackend

from tests.fixtures import FIXTURES, REFERENCE_ROOTS, SHARED, root_id

REPO = Path(__file__).resolve().parents[2]
MD = "seeds/doc/markdown/python_execution_model.md"
HTML = "seeds/doc/html/python_compound_statements.html"
PDF = "seeds/doc/pdf/python_format_strings.pdf"
XML = "seeds/doc/xml/northwind_trails_report_2024"
REPO_XML = XML
CONFIG = {"resources": {"doc": {"config": {"seed_path": XML}}}}


def make(config=None, roots=None) -> DocBackend:
    ctx = BackendContext(data_dir=REPO / ".agentflow", roots=roots or [REPO / "seeds"], project_dir=REPO)
    return DocBackend(config or {}, ctx)


def call_ctx(timeout: float = 10, max_output_bytes: int = 65536) -> ToolContext:
    return ToolContext(worker_id="t", timeout=timeout, max_output_bytes=max_output_bytes)


@pytest.fixture(scope="module")
def backend():
    return make()


@pytest.mark.parametrize("path, fmt, first_title, min_sections", [
    (MD, "markdown", "Execution model", 10),
    (HTML, "html", "Compound statements", 30),
    (PDF, "pdf", "Format String Syntax", 4),
    (XML, "xml", "Northwind Trails Annual Report 2024", 9),
])
def test_outline_of_each_format(backend, path, fmt, first_title, min_sections):
    out = backend.outline(call_ctx(), seed_path=path)
    assert out["format"] == fmt and out["seed_path"] == path
    assert out["section_count"] >= min_sections
    assert out["sections"][0]["title"] == first_title
    ids = [s["section_id"] for s in out["sections"]]
    assert len(ids) == len(set(ids))


def test_pdf_sections_follow_bookmarks_with_pages(backend):
    out = backend.outline(call_ctx(), seed_path=PDF)
    assert out["pages"] == 12
    titles = [(s["title"], s["level"]) for s in out["sections"]]
    assert titles[:3] == [("Format String Syntax", 1), ("Format Specification Mini-Language", 2), ("Format examples", 2)]
    assert all(s["page_start"] <= s["page_end"] for s in out["sections"])


def test_pdf_without_bookmarks_splits_by_page(tmp_path):
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter()
    for page in PdfReader(str(REPO / PDF)).pages[:3]:
        writer.add_page(page)
    target = tmp_path / "plain.pdf"
    with target.open("wb") as fh:
        writer.write(fh)
    doc = load_document(target)
    assert [s.id for s in doc.sections] == ["1", "2", "3"]
    assert [(s.page_start, s.page_end) for s in doc.sections] == [(1, 1), (2, 2), (3, 3)]


def test_search_finds_sections_with_snippets(backend):
    out = backend.search(call_ctx(), seed_path=HTML, key_words=["irrefutable", "wildcard"])
    assert out["results"][0]["section_id"] == "14"  # "Irrefutable Case Blocks" mentions both
    assert set(out["results"][0]["matched"]) == {"irrefutable", "wildcard"}
    assert any("irrefutable" in s.lower() for s in out["results"][0]["snippets"])
    one = backend.search(call_ctx(), seed_path=MD, key_words="UnboundLocalError", max_results=1)
    assert len(one["results"]) == 1 and one["total_matches"] >= 1
    none = backend.search(call_ctx(), seed_path=MD, key_words="kubernetes")
    assert none["results"] == [] and "no section" in none["note"]


def test_search_looks_in_figures_and_tables(backend):
    out = backend.search(call_ctx(), seed_path=XML, key_words=["revenue per store"])
    assert out["results"][0]["section_id"] == "3"
    assert "figure 0" in out["results"][0]["found_in"]
    tables = backend.search(call_ctx(), seed_path=XML, key_words="platinum")
    assert "table 2" in tables["results"][0]["found_in"]


def test_search_rejects_empty_key_words(backend):
    with pytest.raises(ParamError, match="key_words"):
        backend.search(call_ctx(), seed_path=MD, key_words=["  "])


def test_read_returns_text_and_figure_files(backend):
    out = backend.read(call_ctx(), seed_path=XML, section_ids=["3", 4])
    store, monthly = out["sections"]
    assert "Northwind Trails Denver" in store["text"] and store["page_start"] == 1
    assert store["figures"][0]["file"] == f"{XML}/figures/image_0.png"
    assert store["tables"][0]["caption"].startswith("Table 1")
    assert monthly["figures"][0]["caption"].startswith("Figure 2")
    md = backend.read(call_ctx(), seed_path=MD, section_ids="5")["sections"][0]
    assert md["figures"][0]["file"] == "seeds/doc/markdown/figures/name_resolution.png"
    html = backend.read(call_ctx(), seed_path=HTML, section_ids=["1"])["sections"][0]
    assert html["figures"][0]["file"] == "seeds/doc/html/figures/statement_lengths.png"
    assert "try | try | except, except*, else, finally" in html["text"]


def test_read_unknown_section_names_it(backend):
    with pytest.raises(ParamError, match="no section '99'.*section ids are: 1, 2"):
        backend.read(call_ctx(), seed_path=XML, section_ids=["2", "99"])


def test_read_cuts_long_text(backend):
    out = backend.read(call_ctx(max_output_bytes=3000), seed_path=PDF, section_ids=["2"])
    assert out["truncated"] is True and "section cut" in out["sections"][0]["text"]


def test_goal_without_model_is_ignored_with_a_note(backend):
    out = backend.read(call_ctx(), seed_path=XML, section_ids=["2"], goal="2024 revenue")
    assert "summary" not in out and "goal ignored" in out["note"]


def test_goal_with_a_model_adds_a_summary():
    seen = {}

    class FakeModel(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            body = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "fake",
                               "choices": [{"index": 0, "finish_reason": "stop",
                                            "message": {"role": "assistant", "content": "Revenue was $702,302.70 [2]."}}],
                               "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), FakeModel)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend = make({"vlm_model": "fake-vlm", "vlm_api_key": "k",
                        "vlm_api_url": f"http://127.0.0.1:{httpd.server_port}/v1", "vlm_retry_max_attempts": 0})
        out = backend.read(call_ctx(), seed_path=XML, section_ids=["3"], goal="best store")
    finally:
        httpd.shutdown()
    assert out["summary"] == "Revenue was $702,302.70 [2]." and out["images_sent"] == 1
    content = seen["body"]["messages"][0]["content"]
    assert "best store" in content[0]["text"] and content[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_seed_path_must_stay_inside_roots(backend, tmp_path):
    for bad in ("../../etc/passwd", "/etc/passwd", "../setup.cfg", "doc/../../setup.cfg"):
        with pytest.raises(ParamError, match="outside the allowed"):
            backend.outline(call_ctx(), seed_path=bad)
    with pytest.raises(ParamError, match="does not exist"):
        backend.outline(call_ctx(), seed_path="seeds/doc/nothing.md")
    with pytest.raises(ParamError, match="unsupported document type"):
        backend.outline(call_ctx(), seed_path="seeds/text2sql/build_db.py")
    with pytest.raises(ParamError, match="seed_path.*required"):
        backend.outline(call_ctx())


def test_default_seed_path_and_reparse_on_change(tmp_path):
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\n## One\nalpha\n")
    backend = make({"seed_path": str(doc)}, roots=[tmp_path])
    assert [s["title"] for s in backend.outline(call_ctx())["sections"]] == ["Notes", "One"]
    doc.write_text("# Notes\n\n## One\nalpha\n\n## Two\nbeta gamma\n")
    assert backend.search(call_ctx(), key_words="gamma")["results"][0]["title"] == "Two"


def test_markdown_ignores_headings_in_code_and_reads_setext(tmp_path):
    doc = tmp_path / "a.md"
    doc.write_text("Intro text\n\nTitle\n=====\n\n```\n# not a heading\n```\n\nSub\n---\nbody\n")
    parsed = load_document(doc)
    assert [(s.title, s.level) for s in parsed.sections] == [("a", 1), ("Title", 1), ("Sub", 2)]
    assert "# not a heading" in parsed.sections[1].text


def test_bad_options_fail_at_start():
    with pytest.raises(BackendConfigError, match="unknown option"):
        make({"vlm_modle": "x"})
    with pytest.raises(BackendConfigError, match="max_search_results"):
        make({"max_search_results": "ten"})


def test_benchmark_answers_occur_in_their_sections():
    records = [json.loads(line) for line in (REPO / "benchmark" / "doc.jsonl").read_text().splitlines()]
    assert len(records) >= 20 and len({r["id"] for r in records}) == len(records)
    assert {r["kwargs"]["seed_path"] for r in records} == {MD, HTML, PDF, XML}
    norm = lambda s: " ".join(s.split()).lower()  # noqa: E731
    for rec in records:
        section = load_document(REPO / rec["kwargs"]["seed_path"]).section(rec["section_id"])
        assert section is not None, rec["id"]
        assert norm(rec["answer"]) in norm(section.text), rec["id"]


def test_seeds_file_points_at_shipped_documents(backend):
    seeds = [json.loads(line) for line in (REPO / "seeds" / "doc" / "seeds.jsonl").read_text().splitlines()]
    assert len(seeds) == 4
    for seed in seeds:
        assert seed["content"]
        assert backend.outline(call_ctx(), **seed["kwargs"])["section_count"] > 0


def test_shipped_config_loads():
    cfg = load_server_config(REPO / "configs" / "sandbox-server" / "doc.json", env={})
    backend = make(cfg.resources["doc"])
    assert not backend.model_configured
    assert backend.outline(call_ctx())["title"] == "Northwind Trails Annual Report 2024"


@pytest.mark.parametrize("root", REFERENCE_ROOTS, ids=root_id)
def test_reference_config_needs_vlm_api_key(root):
    path = root / "configs" / "sandbox-server" / "doc_config.json"
    with pytest.raises(ConfigError, match="VLM_API_KEY"):
        load_server_config(path, env={})
    cfg = load_server_config(path, env={"VLM_API_KEY": "sk-test"})
    backend = make(cfg.resources["doc"])  # every AgentFlow option is accepted
    assert backend.model_configured
    with pytest.raises(ParamError, match="does not exist"):  # its default document is not in this project
        backend.outline(call_ctx())


# (root, document, sections, third section's title, a section with a table, a word in it)
SEED_LAYOUTS = [(FIXTURES, "tide-gauge-2023", 8, "1 Introduction", "7", "HarbourSet"),
                (SHARED, "2210.02442v1", 23, "1 Introduction", "7", "PathMNIST")]


@pytest.mark.parametrize("root,doc,count,title,table_section,word",
                         [c for c in SEED_LAYOUTS if c[0] in REFERENCE_ROOTS], ids=lambda v: root_id(v) if isinstance(v, Path) else None)
def test_reference_seed_layout_is_read(root, doc, count, title, table_section, word):
    backend = make(roots=[root])
    seed = str(root / "seeds" / "doc" / "seed" / doc)
    out = backend.outline(call_ctx(), seed_path=seed)
    assert out["format"] == "xml" and out["section_count"] == count
    assert out["sections"][2]["title"] == title
    read = backend.read(call_ctx(), seed_path=seed, section_ids=[table_section])["sections"][0]
    assert word in read["text"] and read["tables"]
    hits = backend.search(call_ctx(), seed_path=seed, key_words=["cold start"])
    assert hits["total_matches"] > 3


# -- through the real server (POST /execute) -------------------------------------------
def run(server, action, params, **extra):
    body = {"worker_id": f"doc-{uuid.uuid4().hex[:8]}", "action": action, "params": params, **extra}
    return server.post("/execute", body).json()


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A server with only this backend enabled."""
    from tests.support.server import start_server

    server = start_server(tmp_path_factory.mktemp("srv"), config=CONFIG, workers=1, threads=4)
    yield server
    server.stop()


def test_tools_are_listed_with_schemas(srv):
    tools = {t["name"]: t for t in srv.get("/tools").json()["data"]["tools"]}
    assert {"doc:outline", "doc:search", "doc:read"} <= set(tools)
    assert tools["doc:read"]["parameters"]["required"] == ["section_ids"]
    openai = srv.get("/tools", params={"format": "openai"}).json()["data"]["tools"]
    assert any(t["function"]["name"] == "doc-read" for t in openai)


def test_default_server_serves_documents(server):
    out = run(server, "doc:outline", {"seed_path": "seeds/doc/html/python_compound_statements.html"})
    assert out["code"] == 0 and out["data"]["section_count"] >= 30


def test_doc_happy_path(srv):
    outline = run(srv, "doc:outline", {})  # the configured default document
    assert outline["code"] == 0 and outline["data"]["title"] == "Northwind Trails Annual Report 2024"
    hits = run(srv, "doc:search", {"key_words": ["Reno"], "seed_path": REPO_XML})
    assert hits["code"] == 0 and hits["data"]["results"][0]["section_id"] == "9"
    read = run(srv, "doc-read", {"seed_path": "seeds/doc/markdown/python_execution_model.md", "section_ids": ["8"],
                                 "goal": "termination model"})
    assert read["code"] == 0 and "termination" in read["data"]["sections"][0]["text"]
    assert "goal ignored" in read["data"]["note"]
    pdf = run(srv, "doc:outline", {"seed_path": "seeds/doc/pdf/python_format_strings.pdf"})
    assert pdf["code"] == 0 and pdf["data"]["pages"] == 12


@pytest.mark.parametrize("action, params, text", [
    ("doc:outline", {"seed_path": "../../etc/passwd"}, "outside the allowed"),
    ("doc:outline", {"seed_path": "/etc/passwd"}, "outside the allowed"),
    ("doc:read", {"seed_path": REPO_XML, "section_ids": ["42"]}, "no section '42'"),
    ("doc:read", {"section_ids": []}, "section_ids"),
    ("doc:search", {"key_words": ""}, "key_words"),
    ("doc:search", {"key_words": "x", "seed_path": "seeds/doc/missing.md"}, "does not exist"),
    ("doc:search", {"seed_path": REPO_XML}, "key_words"),
])
def test_doc_bad_inputs(srv, action, params, text):
    out = run(srv, action, params)
    assert out["code"] == 1002 and text in out["message"], out
