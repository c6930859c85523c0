"""Path escapes through the server: ``..``, absolute paths, symlinks out of a root, and
the server's own data dir (database, log, workspaces) — all 1002, nothing read."""
from __future__ import annotations

import os
import uuid

import pytest


def run(srv, action, params, worker=None):
    return srv.post("/execute", {"worker_id": worker or f"p_{uuid.uuid4().hex[:6]}", "action": action,
                                 "params": params}).json()


@pytest.fixture(scope="module")
def hostile_root(tmp_path_factory):
    """A configured root holding symlinks that point out of it."""
    root = tmp_path_factory.mktemp("root")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.csv").write_text("secret\nTOPSECRET\n")
    (outside / "secret.md").write_text("# Secret\n\nTOPSECRET\n")
    (root / "data").mkdir()
    (root / "data" / "ok.csv").write_text("a,b\n1,2\n")
    os.symlink(outside / "secret.csv", root / "data" / "leak.csv")
    os.symlink(outside / "secret.md", root / "leak.md")
    os.symlink(outside, root / "outdir")
    # data roots are read by sessions as their own uid: world-readable, like shipped seeds
    for path in (root.parent, root, root / "data"):
        os.chmod(path, 0o755)
    os.chmod(root / "data" / "ok.csv", 0o644)
    return root


@pytest.fixture(scope="module")
def srv(tmp_path_factory, hostile_root):
    from tests.support.server import start_server

    resources = {name: {"enabled": True} for name in ("doc", "ds", "text2sql", "rag", "diag")}
    server = start_server(tmp_path_factory.mktemp("paths"), config={"server": {"roots": [str(hostile_root)]},
                                                                    "resources": resources})
    yield server
    server.stop()


@pytest.mark.parametrize("action, params", [
    ("doc:outline", {"seed_path": "../../../../etc/passwd"}),
    ("doc:search", {"seed_path": "/etc/passwd", "key_words": ["root"]}),
    ("doc:read", {"seed_path": "seeds/../../../etc/passwd", "section_ids": ["1"]}),
    ("ds:inspect_data", {"seed_path": "../../../../etc"}),
    ("ds:read_csv", {"seed_path": "seeds/ds/bookshop", "csv_file": "../../../../etc/passwd"}),
    ("ds:run_python", {"seed_path": "/etc", "code": "print(open('passwd').read())"}),
])
def test_dot_dot_and_absolute_paths(srv, action, params):
    out = run(srv, action, params)
    assert out["code"] == 1002 and "outside the allowed" in out["message"], out


@pytest.mark.parametrize("action, params", [
    ("doc:outline", {"seed_path": "leak.md"}),
    ("ds:read_csv", {"seed_path": "data", "csv_file": "leak.csv"}),
    ("ds:inspect_data", {"seed_path": "outdir"}),
    ("doc:search", {"seed_path": "outdir/secret.md", "key_words": ["TOPSECRET"]}),
])
def test_symlinks_out_of_a_root(srv, action, params):
    out = run(srv, action, params)
    assert out["code"] == 1002 and "TOPSECRET" not in str(out["data"]), out


def test_inside_the_root_still_works(srv):
    out = run(srv, "ds:read_csv", {"seed_path": "data", "csv_file": "ok.csv"})
    assert out["code"] == 0 and out["data"]["rows"] == [[1, 2]]


@pytest.mark.parametrize("name", ["agentflow.db", "agentflow.db-wal", "server.log", "server-config.json"])
def test_the_data_dir_is_not_readable(srv, name):
    """The data dir holds every caller's audited calls, the log and the config."""
    run(srv, "diag:echo", {"value": "TOPSECRET-of-another-worker"})
    for action, params in (("ds:read_csv", {"seed_path": str(srv.home), "csv_file": name}),
                           ("doc:outline", {"seed_path": str(srv.home / name)})):
        out = run(srv, action, params)
        assert out["code"] == 1002 and "TOPSECRET" not in str(out), out


def test_data_copy_keeps_links_as_links(srv, hostile_root):
    """ds:run_python copies the data folder into the session: a link out of the root is
    copied as a link (read with the session user's rights), never as the file it names."""
    w = f"p_{uuid.uuid4().hex[:6]}"
    out = run(srv, "ds:run_python", {"seed_path": "data", "code": "import os; (os.path.islink('leak.csv'), "
                                     "sorted(os.listdir('.')))"}, worker=w)
    assert out["code"] == 0, out
    assert out["data"]["result"] == "(True, ['leak.csv', 'ok.csv'])"
    srv.post("/session/destroy", {"worker_id": w, "resource_type": "ds"})


@pytest.mark.parametrize("query, text", [
    ("SELECT zeroblob(1000000000)", "too big"),
    ("SELECT hex(zeroblob(100000000))", "too big"),
    ("WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) INSERT INTO stores SELECT * FROM stores",
     "read-only"),
    ("SELECT * FROM stores; DROP TABLE stores", "one statement"),
    ("PRAGMA writable_schema = ON", "read-only"),
])
def test_sql_that_writes_or_hogs_memory(srv, query, text):
    out = run(srv, "text2sql:execute", {"db_id": "retail", "query": query})
    assert out["code"] == 2001 and text in out["message"], out


def test_sql_db_id_is_not_a_path(srv):
    out = run(srv, "text2sql:execute", {"db_id": "../../etc/passwd", "query": "SELECT 1"})
    assert out["code"] == 1002 and "unknown database" in out["message"]


def test_rag_takes_no_paths(srv):
    """rag's corpus comes from the server config only; a path-like query is just text."""
    out = run(srv, "rag:search", {"query": "../../etc/passwd"})
    assert out["code"] == 0 and "root:x:0:0" not in str(out["data"])
    out = run(srv, "rag:search", {"query": "x", "corpus_path": "/etc/passwd"})
    assert out["code"] == 1002
