"""The GUI backends against hostile session code: the desktop's terminal and programs,
and Chromium, are confined like a bash session, and a browser's DevTools cannot be
reached by anyone else.

Acting as the attacker: commands typed into the desktop's terminal (``vm:type``), a
``bash`` session with network "full" (the most a co-tenant gets) scanning for other
sessions' displays and DevTools endpoints, and the host view of what each session runs.
Skipped only when the GUI packages are missing.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentflow.tools.gui.chromium import find_chromium
from tests.support.jail import cgroup_pids, session_pids, wait_until_gone
from tests.support.server import start_server

_missing = [p for p in ("Xvfb", "xdotool", "wmctrl", "openbox", "xterm", "xauth") if shutil.which(p) is None]
if find_chromium() is None:
    _missing.append("chromium")
try:
    import playwright  # noqa: F401
except ImportError:  # pragma: no cover
    _missing.append("playwright")
pytestmark = pytest.mark.skipif(bool(_missing), reason="GUI packages missing: " + ", ".join(_missing))

SITE = "seeds/gui/site/index.html"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    config = {"resources": {"vm": {"config": {}}, "browser": {"config": {}},
                            "bash": {"config": {"network": "full"}}}}
    server = start_server(tmp_path_factory.mktemp("gui-hostile"), config=config)
    yield server
    server.stop()


class _Session:
    def __init__(self, srv, resource: str, config: dict | None = None):
        self.srv, self.resource, self.worker = srv, resource, f"h-{resource}-{uuid.uuid4().hex[:8]}"
        created = srv.post("/session/create", {"worker_id": self.worker, "resource_type": resource,
                                               "config": config or {}}).json()
        assert created["code"] == 0, created
        self.id = created["data"]["session_id"]
        self.state = srv.state_of(self.id)
        self.workspace = srv.workspace_of(self.id)

    def call(self, action: str, params: dict | None = None, timeout: float | None = None) -> dict:
        body = {"worker_id": self.worker, "action": action, "params": params or {}}
        if timeout:
            body["timeout"] = timeout
        return self.srv.post("/execute", body).json()

    def destroy(self) -> None:
        out = self.srv.post("/session/destroy", {"worker_id": self.worker, "resource_type": self.resource}).json()
        assert out["code"] == 0, out


def _wait_file(path: Path, limit: float = 10.0) -> str:
    deadline = time.monotonic() + limit
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), f"{path.name} was not written: the command typed into the terminal did not run"
    return path.read_text()


def _status(pid: int) -> dict[str, str]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _listening_inodes() -> set[str]:
    """Socket inodes of every listening TCP socket of the host's network namespace."""
    found = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                found.add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                found.add(target[8:-1])
    except OSError:
        pass
    return found


# -- the desktop ------------------------------------------------------------------------------

def test_desktop_terminal_is_not_root_and_sees_no_server_data(srv):
    vm = _Session(srv, "vm")
    try:
        home = srv.home
        command = (f"id -u > uid.txt; ls -a {home} > home.txt 2>&1; cat {home}/agentflow.db > db.txt 2>&1; "
                   f"ls /proc | grep -c '^[0-9]' > procs.txt; echo ok > done.txt\n")
        typed = vm.call("vm:type", {"text": command})
        assert typed["code"] == 0, typed
        _wait_file(vm.workspace / "done.txt")
        uid = int((vm.workspace / "uid.txt").read_text())
        assert uid != 0 and uid == vm.state["jail"]["uid"], "the desktop's terminal is not the session's uid"
        assert "agentflow.db" not in (vm.workspace / "home.txt").read_text()
        assert "No such file" in (vm.workspace / "db.txt").read_text(), "the server database is visible"
        # its own pid namespace: a handful of processes, not the host's
        assert int((vm.workspace / "procs.txt").read_text()) < 40
        # from the host: every process of the desktop is in the session's cgroup, none is root
        pids = cgroup_pids(vm.state["jail"]["key"])
        names = {Path(_cmdline(p)[0]).name for p in pids if _cmdline(p)}
        assert {"Xvfb", "openbox", "xterm", "bash"} <= names, names
        for pid in pids:
            real_uid = _status(pid).get("Uid", "").split()[:1]
            assert real_uid and real_uid != ["0"], (pid, _cmdline(pid))
    finally:
        vm.destroy()


def test_a_desktop_is_out_of_reach_of_other_sessions(srv):
    vm = _Session(srv, "vm")
    attacker = _Session(srv, "bash")
    try:
        # The display listens only in the desktop's private /tmp: no abstract socket in the
        # (shared, network "full") namespace, and no socket file on the host's /tmp.
        probe = ("import socket\nfor name in ('\\0/tmp/.X11-unix/X0', '/tmp/.X11-unix/X0'):\n"
                 "    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect(name)\n"
                 "        print('CONNECTED', repr(name))\n    except OSError as err:\n"
                 "        print('refused', repr(name), err.errno)\n")
        out = attacker.call("bash:run", {"command": f"cat > p.py <<'EOF'\n{probe}EOF\n{sys.executable} -I p.py"})
        assert out["code"] == 0, out
        assert "CONNECTED" not in out["data"]["stdout"] and out["data"]["stdout"].count("refused") == 2, out
        display_pids = cgroup_pids(vm.state["jail"]["key"])
        assert display_pids and not set(display_pids) & set(cgroup_pids(attacker.state["jail"]["key"]))
    finally:
        vm.destroy()
        attacker.destroy()


def test_destroy_ends_every_desktop_process(srv):
    vm = _Session(srv, "vm")
    typed = vm.call("vm:type", {"text": "setsid sleep 1000 & nohup sleep 999 & echo ok > started.txt\n"})
    assert typed["code"] == 0, typed
    _wait_file(vm.workspace / "started.txt")
    assert vm.call("vm:open", {"app_or_url": "xterm -T extra"})["code"] == 0
    state = srv.state_of(vm.id)
    assert len(session_pids(state)) >= 6
    vm.destroy()
    assert wait_until_gone(state) == [], "processes of the desktop outlived its session"


# -- the browser ----------------------------------------------------------------------------

class _FakeDevTools(http.server.BaseHTTPRequestHandler):
    """A positive control: what the scan reports when it finds a DevTools endpoint."""

    def do_GET(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"Browser": "Fake", "webSocketDebuggerUrl": "ws://127.0.0.1/devtools/browser/x"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


_SCAN = r'''
import socket, sys
ports = set()
for name in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(name).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[3] == "0A":
            ports.add(int(f[1].rsplit(":", 1)[1], 16))
found = []
for port in sorted(ports):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
        s.settimeout(1.0)
        s.sendall(b"GET /json/version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        data = b""
        while len(data) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError:
        continue
    if b"webSocketDebuggerUrl" in data:
        found.append(port)
print("scanned", len(ports), "devtools", found)
'''


def test_no_other_session_can_reach_a_browsers_devtools(srv):
    control = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeDevTools)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    victim = _Session(srv, "browser")
    attacker = _Session(srv, "bash")
    try:
        assert victim.call("browser:goto", {"url": SITE})["code"] == 0
        pids = cgroup_pids(victim.state["jail"]["key"])
        chromium = [p for p in pids if "chromium" in Path(_cmdline(p)[0] if _cmdline(p) else "").name]
        assert chromium, "no Chromium in the browser session's cgroup"
        flags = [a for p in chromium for a in _cmdline(p)]
        assert "--remote-debugging-pipe" in flags and not any(a.startswith("--remote-debugging-port") for a in flags)
        for pid in pids:  # Chromium runs as the session, not as the server's user
            assert _status(pid).get("Uid", "").split()[:1] not in ([], ["0"]), (pid, _cmdline(pid))
        # no process of the browser session listens on any TCP port
        listening = _listening_inodes()
        assert not any(_socket_inodes(p) & listening for p in pids), "the browser session listens on a port"
        # the attacker, a co-tenant with full network, scans every listening port it can see
        out = attacker.call("bash:run", {"command": f"cat > scan.py <<'EOF'\n{_SCAN}EOF\n"
                                                    f"{sys.executable} -I scan.py", "timeout": 60})
        assert out["code"] == 0 and out["data"]["exit_code"] == 0, out
        report = out["data"]["stdout"]
        assert report.startswith("scanned"), report
        found = json.loads(report.split("devtools", 1)[1].strip())
        control_port = control.server_address[1]
        # only the positive control (when the jail's network reaches the host loopback at all)
        assert set(found) <= {control_port}, f"a DevTools endpoint is reachable: {report}"
    finally:
        control.shutdown()
        victim.destroy()
        attacker.destroy()


def test_destroy_ends_every_browser_process(srv):
    browser = _Session(srv, "browser")
    assert browser.call("browser:goto", {"url": SITE})["code"] == 0
    state = srv.state_of(browser.id)
    assert len(session_pids(state)) >= 3  # supervisor, Playwright's driver, Chromium and its helpers
    browser.destroy()
    assert wait_until_gone(state) == [], "processes of the browser outlived its session"
