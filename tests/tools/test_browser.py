"""browser backend: Playwright on Debian's Chromium, through the real server (2 workers).

Skipped, with the reason, only when Chromium (Debian package ``chromium``) or the
``playwright`` Python package is missing. That the browser runs confined, and that no
other session can reach its DevTools, is tested in ``tests/hostile/test_gui_confinement.py``.
"""
from __future__ import annotations

import base64
import io
import time
import uuid

import pytest

from agentflow.tools.gui.chromium import find_chromium
from agentflow.tools.gui.x11 import marker_pids
from tests.support.jail import wait_until_gone
from tests.support.server import start_server

_missing = []
if find_chromium() is None:
    _missing.append("chromium (Debian package chromium)")
try:
    import playwright  # noqa: F401
    from PIL import Image
except ImportError as err:  # pragma: no cover
    _missing.append(f"{err.name} (pip install 'agentflow[gui]')")

pytestmark = pytest.mark.skipif(bool(_missing), reason="GUI packages missing: " + ", ".join(_missing))

SITE = "seeds/gui/site/index.html"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = {"resources": {"browser": {"config": {"viewport": [1024, 700]}}}}
    srv = start_server(tmp_path_factory.mktemp("browser-server"), config=config)
    yield srv
    srv.stop()


@pytest.fixture
def session(server):
    worker = f"br-{uuid.uuid4().hex[:8]}"
    created = server.post("/session/create", {"worker_id": worker, "resource_type": "browser"}).json()
    assert created["code"] == 0, created
    yield worker, created["data"]["session_id"]
    server.post("/session/destroy", {"worker_id": worker, "resource_type": "browser"})


def _call(server, worker, action, params=None):
    return server.post("/execute", {"worker_id": worker, "action": action, "params": params or {}}).json()



def test_navigate_click_and_read(server, session):
    worker, _ = session
    opened = _call(server, worker, "browser:goto", {"url": SITE})
    assert opened["code"] == 0, opened
    assert opened["data"]["title"] == "Northwind Intranet — Home"
    links = _call(server, worker, "browser:links")["data"]["links"]
    assert [link["text"] for link in links] == ["Team directory", "Release notes", "Contact form"]
    # several calls in a row, served by either worker process, see the same tab
    for _ in range(2):
        clicked = _call(server, worker, "browser:click", {"text": "Team directory"})
        assert clicked["code"] == 0, clicked
        assert clicked["data"]["navigated"] is True and clicked["data"]["url"].endswith("/team.html")
        text = _call(server, worker, "browser:text")["data"]["text"]
        assert "Mira Okafor Release manager Room 4.12 5521" in text
        back = _call(server, worker, "browser:back")
        assert back["code"] == 0 and back["data"]["url"].endswith("/index.html"), back


def test_form_typing_and_screenshot(server, session):
    worker, _ = session
    assert _call(server, worker, "browser:goto", {"url": "seeds/gui/site/contact.html"})["code"] == 0
    typed = _call(server, worker, "browser:type", {"selector": "#name", "text": "Ada", "submit": True})
    assert typed["code"] == 0, typed
    result = _call(server, worker, "browser:text", {"selector": "#result"})["data"]["text"]
    assert result == "Thanks, Ada! Your ticket number is 1021."
    shot = _call(server, worker, "browser:screenshot")
    raw = base64.b64decode(shot["data"]["image"])
    assert raw.startswith(b"\x89PNG") and Image.open(io.BytesIO(raw)).size == (1024, 700)
    missing = _call(server, worker, "browser:click", {"selector": "#no-such-thing"})
    assert missing["code"] == 2001 and "no element" in missing["message"]


def test_offline_corpus_and_url_rules(server, session):
    worker, _ = session
    page = _call(server, worker, "browser:goto", {"url": "https://docs.python.org/3/library/json.html"})
    assert page["code"] == 0 and page["data"]["status"] == 200, page
    assert "JSON (JavaScript Object Notation)" in _call(server, worker, "browser:text")["data"]["text"]
    offline = _call(server, worker, "browser:goto", {"url": "https://example.invalid/"})
    assert offline["code"] == 2001 and "offline" in offline["message"]
    for url in ("/etc/passwd", "file:///etc/passwd", "javascript:alert(1)"):
        out = _call(server, worker, "browser:goto", {"url": url})
        assert out["code"] == 1002 and out["data"]["param"] == "url", (url, out)
    both = _call(server, worker, "browser:click", {"selector": "a", "text": "x"})
    assert both["code"] == 1002


def test_destroy_ends_chromium(server):
    worker = f"br-{uuid.uuid4().hex[:8]}"
    created = server.post("/session/create", {"worker_id": worker, "resource_type": "browser"}).json()
    full = server.state_of(created["data"]["session_id"])
    state = full["browser"]
    assert _call(server, worker, "browser:goto", {"url": SITE})["code"] == 0
    assert len(marker_pids(state["marker"])) >= 2  # the browser and its helper processes
    assert server.post("/session/destroy", {"worker_id": worker, "resource_type": "browser"}).json()["code"] == 0
    assert wait_until_gone(full) == []  # the session's cgroup is empty
    deadline = time.monotonic() + 5
    while marker_pids(state["marker"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker_pids(state["marker"]) == []
