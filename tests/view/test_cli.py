"""``agentflow view`` as a command: what it refuses before serving (each with one clear
line), the Host check that keeps a loopback viewer from being reached by DNS rebinding,
and ``agentflow demo`` ending with the command that views its database."""
from __future__ import annotations

import socket
import sqlite3

import pytest
import requests

from agentflow.cli.view import viewer_command
from agentflow.db import upgrade
from tests.support.server import free_port


@pytest.fixture
def view(capsys):
    """``agentflow view ARGS`` in this process (for the refusals: nothing is served), as
    (exit code, stderr)."""
    from agentflow.cli import main

    def run(*args: str) -> tuple[int, str]:
        code = main(["view", *args])
        return code, capsys.readouterr().err

    return run


def test_refuses_a_missing_an_empty_and_an_old_database(tmp_path, view):
    missing = tmp_path / "missing.db"
    code, err = view("--database-url", f"sqlite:///{missing}", "--port", str(free_port()))
    assert code == 2 and "no sqlite database at" in err and not missing.exists()

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (a)").connection.close()
    code, err = view("--database-url", f"sqlite:///{other}", "--port", str(free_port()))
    assert code == 2 and "holds no AgentFlow tables" in err

    old = tmp_path / "old.db"
    upgrade(f"sqlite:///{old}", "0007_cluster_nodes")
    code, err = view("--database-url", f"sqlite:///{old}", "--port", str(free_port()))
    assert code == 2 and "schema revision 0007_cluster_nodes" in err and "agentflow db upgrade" in err

    code, err = view("--database-url", "mysql://u@localhost/x", "--port", str(free_port()))
    assert code == 2 and "sqlite or PostgreSQL" in err


def test_refuses_a_busy_port(built, view):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, err = view("--database-url", built.url, "--port", str(s.getsockname()[1]))
    assert code == 2 and "--port" in err


def test_a_loopback_viewer_answers_loopback_host_names_only(viewer):
    assert requests.get(viewer.url + "/runs", headers={"Host": f"localhost:{viewer.port}"}, timeout=10).ok
    r = requests.get(viewer.url + "/runs", headers={"Host": "attacker.example"}, timeout=10)
    assert r.status_code == 400 and "answers requests for" in r.text


def test_headers_forbid_framing_sniffing_and_caching(viewer):
    r = viewer.get("/runs")
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Server-Timing"].startswith("app;dur=")
    assert viewer.get("/static/view.js").headers["Content-Type"].startswith("text/javascript")


def test_demo_ends_by_printing_the_viewer_command(built):
    lines = built.demo_output.rstrip().splitlines()
    assert lines[-1].strip() == viewer_command(built.url)
    assert "look at the runs in a browser" in lines[-2] and "http://127.0.0.1:18900" in lines[-2]


@pytest.mark.parametrize("args, message", [(["--sql-time-limit", "0"], "--sql-time-limit"),
                                           (["--sql-max-rows", "0"], "--sql-max-rows")])
def test_refuses_bad_limits(built, view, args, message):
    code, err = view("--database-url", built.url, "--port", str(free_port()), *args)
    assert code == 2 and message in err
