"""vm backend: a real Xvfb desktop per session, through the real server (2 workers).

Skipped, with the reason, only when a Debian package it needs is not installed
(``.ci/run`` installs them: xvfb xauth xfonts-base xdotool wmctrl openbox xterm). What
the desktop's programs can and cannot reach is tested in
``tests/hostile/test_gui_confinement.py``.
"""
from __future__ import annotations

import base64
import io
import shutil
import time
import uuid

import pytest

from agentflow.tools.gui.vm import parse_screen_size
from agentflow.tools.gui.x11 import marker_pids
from tests.support.jail import session_pids, wait_until_gone
from tests.support.server import start_server

PROGRAMS = {"Xvfb": "xvfb", "xdotool": "xdotool", "wmctrl": "wmctrl", "openbox": "openbox", "xterm": "xterm",
            "xauth": "xauth"}
_missing = [f"{prog} (Debian package {pkg})" for prog, pkg in PROGRAMS.items() if shutil.which(prog) is None]
try:
    from PIL import Image, ImageChops
except ImportError:  # pragma: no cover - Pillow comes with the dev extra
    _missing.append("Pillow (pip install 'agentflow[gui]')")

pytestmark = pytest.mark.skipif(bool(_missing), reason="GUI packages missing: " + ", ".join(_missing))


def test_parse_screen_size():
    assert parse_screen_size([1920, 1080], "s") == (1920, 1080)
    assert parse_screen_size("800x600", "s") == (800, 600)
    assert parse_screen_size({"width": 640, "height": 480}, "s") == (640, 480)
    for bad in ([10, 10], "big", [1, 2, 3], None):
        with pytest.raises(ValueError):
            parse_screen_size(bad, "s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = {"resources": {"vm": {"config": {}}}, "warmup": {"enabled": True, "resources": ["vm"]}}
    srv = start_server(tmp_path_factory.mktemp("vm-server"), config=config)
    yield srv
    srv.stop()


def _worker() -> str:
    return f"vm-{uuid.uuid4().hex[:8]}"


def _call(server, worker, action, params=None, **extra):
    return server.post("/execute", {"worker_id": worker, "action": action, "params": params or {}, **extra}).json()


def _image(envelope) -> Image.Image:
    data = envelope["data"]
    raw = base64.b64decode(data["image"])
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(raw))
    image.load()
    assert image.size == (data["width"], data["height"])
    return image.convert("RGB")



class _Session:
    def __init__(self, server, config=None):
        self.server, self.worker = server, _worker()
        body = {"worker_id": self.worker, "resource_type": "vm", "config": config or {}}
        t0 = time.monotonic()
        created = server.post("/session/create", body).json()
        self.seconds = time.monotonic() - t0
        assert created["code"] == 0, created
        self.id = created["data"]["session_id"]
        self.state = server.state_of(self.id)

    def call(self, action, params=None):
        return _call(self.server, self.worker, action, params)

    def destroy(self):
        return self.server.post("/session/destroy", {"worker_id": self.worker, "resource_type": "vm"}).json()


def _wait_for_change(session, before: Image.Image, limit=5.0) -> Image.Image:
    deadline = time.monotonic() + limit
    while True:
        after = _image(session.call("vm:screenshot"))
        if ImageChops.difference(before, after).getbbox() is not None or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def test_fresh_session_screenshot_has_requested_size(server):
    session = _Session(server, {"screen_size": [1024, 768]})
    try:
        shot = session.call("vm:screenshot")
        assert shot["code"] == 0, shot
        assert _image(shot).size == (1024, 768)
        assert shot["meta"]["session_id"] == session.id and shot["meta"]["temporary_session"] is False
        windows = session.call("vm:windows")["data"]
        assert windows["screen"] == {"width": 1024, "height": 768}
        assert [w["title"] for w in windows["windows"] if w["focused"]] == ["Terminal"]
    finally:
        assert session.destroy()["code"] == 0


def test_typing_in_the_terminal_changes_the_screen(server):
    session = _Session(server)  # default size
    try:
        before = _image(session.call("vm:screenshot"))
        typed = session.call("vm:type", {"text": "echo agentflow-$((6*7)) > out.txt; cat out.txt\n"})
        assert typed["code"] == 0, typed
        after = _wait_for_change(session, before)
        box = ImageChops.difference(before, after).getbbox()
        assert box is not None, "the screen did not change after typing"
        terminal = next(w for w in session.call("vm:windows")["data"]["windows"] if w["title"] == "Terminal")
        assert terminal["x"] <= box[0] and box[2] <= terminal["x"] + terminal["width"] + 2  # inside the terminal
        # the shell really ran the command, in the session workspace
        workspace = server.workspace_of(session.id)
        deadline = time.monotonic() + 5
        while not (workspace / "out.txt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (workspace / "out.txt").read_text() == "agentflow-42\n"
        assert session.call("vm:key", {"key": "ctrl+l"})["code"] == 0
        assert session.call("vm:hotkey", {"keys": ["ctrl", "u"]})["code"] == 0
    finally:
        session.destroy()


def test_two_sessions_do_not_see_each_other(server):
    a, b = _Session(server), _Session(server)
    try:
        # each desktop is in a sandbox of its own, under a uid of its own
        assert a.state["jail"]["key"] != b.state["jail"]["key"] and a.state["jail"]["uid"] != b.state["jail"]["uid"]
        opened = a.call("vm:open", {"app_or_url": "xterm -T only-in-session-a"})
        assert opened["code"] == 0, opened
        assert [w["title"] for w in opened["data"]["new_windows"]] == ["only-in-session-a"]
        titles_a = [w["title"] for w in a.call("vm:windows")["data"]["windows"]]
        titles_b = [w["title"] for w in b.call("vm:windows")["data"]["windows"]]
        assert "only-in-session-a" in titles_a and "only-in-session-a" not in titles_b
        # and typing in A leaves B's screen as it was
        before_b = _image(b.call("vm:screenshot"))
        a.call("vm:type", {"text": "echo only-a\n"})
        time.sleep(0.3)
        assert ImageChops.difference(before_b, _image(b.call("vm:screenshot"))).getbbox() is None
    finally:
        a.destroy()
        b.destroy()


def test_bad_parameters_are_1002(server):
    session = _Session(server, {"screen_size": [640, 480]})
    try:
        for action, params, param in [("vm:click", {"x": 640, "y": 10}, "x"),
                                      ("vm:move", {"x": 5, "y": -1}, "y"),
                                      ("vm:drag", {"start_x": 1, "start_y": 1, "end_x": 1, "end_y": 900}, "end_y"),
                                      ("vm:key", {"key": "NoSuchKeyAtAll"}, "key"),
                                      ("vm:open", {"app_or_url": "no-such-program-xyz"}, "app_or_url")]:
            out = _call(server, session.worker, action, params)
            assert out["code"] == 1002, (action, out)
            assert out["data"]["param"] == param, (action, out)
        for action, params in [("vm:click", {"x": 10, "y": 10, "button": "right"}), ("vm:double_click", {"x": 5, "y": 5}),
                               ("vm:right_click", {"x": 600, "y": 400}), ("vm:scroll", {"x": 9, "y": 9, "clicks": -3}),
                               ("vm:drag", {"start_x": 1, "start_y": 1, "end_x": 100, "end_y": 100}),
                               ("vm:key", {"key": "Escape"}), ("vm:wait", {"seconds": 0.1})]:
            out = _call(server, session.worker, action, params)
            assert out["code"] == 0, (action, out)
        bad = server.post("/session/create", {"worker_id": _worker(), "resource_type": "vm",
                                              "config": {"screen_size": [5, 5]}}).json()
        assert bad["code"] == 1003 and "screen_size" in bad["message"]
    finally:
        session.destroy()


def test_destroy_leaves_no_process_behind(server):
    session = _Session(server, {"screen_size": [800, 600]})
    session.call("vm:open", {"app_or_url": "xterm -T extra"})
    display = session.state["display"]
    assert marker_pids(display["marker"]) and session_pids(session.state)
    assert session.destroy()["code"] == 0
    assert wait_until_gone(session.state) == []
    assert marker_pids(display["marker"]) == []
    # a call without a session runs in a temporary desktop that ends with the call
    temp = _call(server, _worker(), "vm:screenshot")
    assert temp["code"] == 0 and temp["meta"]["temporary_session"] is True


def test_unconfined_desktops_take_free_display_numbers(tmp_path):
    """With isolation "none" sessions share the host's /tmp: each desktop takes a free
    display number, so two at once (and one after another) all start."""
    srv = start_server(tmp_path / "home", config={"server": {"isolation": "none"},
                                                  "resources": {"vm": {"enabled": True}}})
    try:
        workers = [_worker() for _ in range(3)]
        for worker in workers[:2]:
            created = srv.post("/session/create", {"worker_id": worker, "resource_type": "vm"}, timeout=120).json()
            assert created["code"] == 0, created
        srv.post("/session/destroy", {"worker_id": workers[0], "resource_type": "vm"})
        again = srv.post("/session/create", {"worker_id": workers[2], "resource_type": "vm"}, timeout=120).json()
        assert again["code"] == 0, again
        shot = _call(srv, workers[2], "vm:screenshot")
        assert shot["code"] == 0 and shot["data"]["width"] > 0
    finally:
        srv.stop()
