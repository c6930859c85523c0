"""Confinement, tried from inside a session as an attacker would, against the real
server — once as root, once as an ordinary user (README, "Security").

Each test is code a session runs through the public API (``bash:run``, ``code:run``)
and checks what it could reach; the host side only looks (files, processes, cgroups).
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from tests.support import nonroot
from tests.support.jail import cgroup_pids, session_pids, wait_until_gone
from tests.support.server import start_server

SECRET = "af-secret-" + uuid.uuid4().hex
RESOURCES = {"bash": {"enabled": True}, "code": {"enabled": True}, "ds": {"enabled": True}}


def _start(kind: str, tmp_path_factory, config: dict | None = None):
    config = {"resources": RESOURCES, **(config or {})}
    env = {"AF_TEST_SECRET": SECRET}
    if kind == "root":
        if os.geteuid() != 0:
            pytest.skip("the root server case needs a root test run")
        return start_server(tmp_path_factory.mktemp("confined"), config=config, env=env, token=None), None
    why = nonroot.available()
    if why:
        pytest.skip(f"non-root server: {why}")
    user = nonroot.ensure_user()
    cgroup = f"agentflow-test-{uuid.uuid4().hex[:8]}"
    nonroot.delegate_cgroups(user, cgroup)
    config.setdefault("server", {})["cgroup_parent"] = cgroup
    home = nonroot.make_home(user)
    return start_server(home, config=config, env=env, prefix=nonroot.prefix(user)), cgroup


@pytest.fixture(scope="module", params=["root", "nonroot"])
def srv(request, tmp_path_factory):
    server, cgroup = _start(request.param, tmp_path_factory)
    server.kind = request.param
    yield server
    server.stop()
    if cgroup:
        nonroot.remove_cgroups(cgroup)


def wid() -> str:
    return f"atk-{uuid.uuid4().hex[:8]}"


def create(srv, worker: str, resource: str = "bash") -> dict:
    out = srv.post("/session/create", {"worker_id": worker, "resource_type": resource}).json()
    assert out["code"] == 0, out
    return out["data"]


def bash(srv, worker: str, command: str, timeout: float = 20) -> dict:
    out = srv.post("/execute", {"worker_id": worker, "action": "bash:run",
                                "params": {"command": command, "timeout": timeout}}, timeout=timeout + 30).json()
    return out


def sh(srv, worker: str, command: str, timeout: float = 20) -> str:
    out = bash(srv, worker, command, timeout)
    assert out["code"] == 0, out
    return out["data"]["stdout"] + out["data"]["stderr"]



# -- 1. sees only its own ----------------------------------------------------------
def test_server_data_dir_database_and_other_workspaces_are_not_there(srv):
    victim, attacker = wid(), wid()
    v = create(srv, victim)
    create(srv, attacker)
    sh(srv, victim, "echo victim-private > note.txt")
    db = srv.home / "agentflow.db"
    victim_ws = srv.workspace_of(v["session_id"])
    out = sh(srv, attacker, f"cat {db}; cat {victim_ws}/note.txt; cat {srv.log_path}")
    assert "victim-private" not in out and "SQLite format" not in out and "Listening at" not in out
    listing = sh(srv, attacker, f"ls -a {srv.home} 2>/dev/null; ls -a {victim_ws.parent} 2>/dev/null; true")
    assert v["session_id"] not in listing and "agentflow.db" not in listing, listing


def test_server_environment_and_processes_are_not_visible(srv):
    w = wid()
    create(srv, w)
    out = sh(srv, w, "env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; ps -eo pid,user,args")
    assert SECRET not in out
    assert "gunicorn" not in out and "agentflow.cli" not in out and "serve --port" not in out
    assert len(sh(srv, w, "ps -e --no-headers -o pid").split()) <= 5  # bwrap, supervisor, bash, ps


def test_code_kernel_cannot_read_the_database_or_the_server_environment(srv):
    w = wid()
    create(srv, w, "code")
    code = (f"import os\nout = [os.environ.get('AF_TEST_SECRET')]\n"
            f"try:\n    out.append(open({str(srv.home / 'agentflow.db')!r}, 'rb').read(16))\n"
            f"except OSError as e:\n    out.append(type(e).__name__)\nout")
    res = srv.post("/execute", {"worker_id": w, "action": "code:run", "params": {"code": code}}).json()
    assert res["code"] == 0, res
    assert res["data"]["result"] in ("[None, 'FileNotFoundError']", "[None, 'PermissionError']")


def test_system_and_data_roots_are_read_only_and_tmp_is_private(srv):
    a, b = wid(), wid()
    create(srv, a)
    create(srv, b)
    seeds = Path(__file__).resolve().parents[2] / "seeds"
    out = sh(srv, a, f"touch /usr/af-x; touch /etc/af-x; touch {seeds}/af-x; echo mine > /tmp/af-tmp; cat /tmp/af-tmp")
    assert out.count("Read-only file system") + out.count("Permission denied") >= 3, out
    assert "mine" in out and not (seeds / "af-x").exists()
    assert "mine" not in sh(srv, b, "cat /tmp/af-tmp")


def test_session_code_cannot_make_user_namespaces(srv):
    w = wid()
    create(srv, w)
    out = bash(srv, w, "unshare -U -r id && echo MADE-A-USER-NAMESPACE", timeout=10)
    assert out["code"] == 0 and "MADE-A-USER-NAMESPACE" not in out["data"]["stdout"], out


# -- 2. identity --------------------------------------------------------------------
def test_each_session_has_its_own_identity_and_signals_reach_only_its_own(srv):
    a, b = wid(), wid()
    create(srv, a)
    create(srv, b)
    uid_a, uid_b = sh(srv, a, "id -u").strip(), sh(srv, b, "id -u").strip()
    assert uid_a != "0" and uid_b != "0"
    if srv.kind == "root":  # allocated uids; a non-root server's sessions differ by namespaces
        assert uid_a != uid_b
    sh(srv, b, "setsid sleep 300 > /dev/null 2>&1 < /dev/null & sleep 0.3; echo started")
    killed = bash(srv, a, "kill -9 -1; pkill -9 sleep; true")  # ends everything of its own session
    assert killed["code"] in (0, 2001), killed
    assert "sleep" in sh(srv, b, "ps -eo args")
    again = bash(srv, a, "echo back")  # the session's sandbox starts again
    assert again["code"] == 0 and again["data"]["stdout"] == "back\n" and again["data"]["sandbox_restarted"]


# -- 3. the server never follows a session-controlled path ------------------------------
def test_planted_links_and_fifos_in_the_workspace_are_never_followed(srv, tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("untouched")
    os.chmod(canary, 0o600)
    before = (canary.stat().st_uid, canary.stat().st_mode, canary.read_text())
    w = wid()
    create(srv, w)
    sh(srv, w, f"mkdir -p .agentflow .kernel data; for f in cwd env out err; do ln -sf {canary} .agentflow/$f; done; "
               f"ln -sf {canary} .kernel/kernel.log; ln -sf {canary} .kernel/kernel.json; mkfifo .agentflow/state; "
               "mkfifo data/fifo.csv; echo ok")
    t0 = time.monotonic()
    for _ in range(3):
        assert "x" in sh(srv, w, "cd /tmp; export A=1; echo x")
    ds = srv.post("/execute", {"worker_id": w, "action": "ds:run_python",
                               "params": {"seed_path": "seeds/ds/bookshop", "code": "1"}}).json()
    assert ds["code"] == 0, ds
    assert time.monotonic() - t0 < 30
    assert (canary.stat().st_uid, canary.stat().st_mode, canary.read_text()) == before


# -- 5/6. no way back into the server; no network ---------------------------------------
def test_no_connection_to_the_server_or_any_loopback_service(srv):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    other = listener.getsockname()[1]
    try:
        w = wid()
        create(srv, w)
        for port in (srv.port, other):
            out = bash(srv, w, f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED", timeout=10)
            assert "CONNECTED" not in out["data"]["stdout"], f"reached loopback port {port}"
        code_w = wid()
        create(srv, code_w, "code")
        res = srv.post("/execute", {"worker_id": code_w, "action": "code:run", "params": {
            "code": f"import socket\ns = socket.socket(); s.settimeout(3)\ns.connect_ex(('127.0.0.1', {srv.port}))"}}).json()
        assert res["code"] == 0 and res["data"]["result"] != "0", res
    finally:
        listener.close()


def test_network_none_has_only_a_private_loopback_and_no_route(srv):
    w = wid()
    create(srv, w)
    out = sh(srv, w, "cat /proc/net/dev; echo ROUTES; tail -n +2 /proc/net/route; tail -n +2 /proc/net/ipv6_route")
    interfaces = [line.split(":")[0].strip() for line in out.split("ROUTES")[0].splitlines() if ":" in line]
    assert interfaces == ["lo"], out
    assert out.split("ROUTES")[1].strip() == "" or "lo" in out.split("ROUTES")[1], out


@pytest.mark.parametrize("kind", ["root", "nonroot"])
def test_network_full_reaches_out_but_never_the_hosts_loopback(kind, tmp_path_factory):
    server, cgroup = _start(kind, tmp_path_factory, {"resources": {"bash": {"enabled": True,
                                                                            "config": {"network": "full"}}}})
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        w = wid()
        create(server, w)
        out = sh(server, w, "cat /proc/net/dev; echo ROUTES; tail -n +2 /proc/net/route; cat /etc/resolv.conf")
        assert "tap0" in out and "00000000" in out.split("ROUTES")[1], out  # an interface and a default route
        assert "nameserver 10.0.2.3" in out
        for host in ("127.0.0.1", "10.0.2.2"):  # its own loopback; slirp's address of the host
            for port in (server.port, listener.getsockname()[1]):
                res = bash(server, w, f"exec 3<>/dev/tcp/{host}/{port} && echo CONNECTED", timeout=10)
                assert "CONNECTED" not in res["data"]["stdout"], (host, port)
        report = server.get("/health").json()["isolation"]["resources"]["bash"]
        assert report["network"] == "full"
    finally:
        listener.close()
        server.stop()
        if cgroup:
            nonroot.remove_cgroups(cgroup)


# -- 7. limits per session ------------------------------------------------------------
@pytest.fixture(scope="module", params=["root", "nonroot"])
def tight(request, tmp_path_factory):
    limits = {"memory_mb": 192, "max_processes": 48, "disk_mb": 32, "file_size_mb": 8}
    server, cgroup = _start(request.param, tmp_path_factory, {"resources": {
        "bash": {"enabled": True, "config": limits}, "code": {"enabled": True, "config": {"memory_mb": 512, "file_size_mb": 8}}}})
    server.kind = request.param
    yield server
    server.stop()
    if cgroup:
        nonroot.remove_cgroups(cgroup)


def test_memory_is_limited_per_session_not_per_process(tight):
    w = wid()
    create(tight, w)
    # two processes of 120 MiB each: either alone fits in 192 MiB, both together do not
    out = sh(tight, w, "for i in 1 2; do (head -c 120M /dev/zero | tail | wc -c) & done; wait; echo done", 60)
    assert out.count("125829120") < 2, out
    assert tight.get("/health").status_code == 200


def test_process_count_is_limited_per_session(tight):
    w = wid()
    create(tight, w)
    out = sh(tight, w, "for i in $(seq 80); do sleep 5 & done 2>&1 | head -3; echo done", 30)
    assert "Resource temporarily unavailable" in out or "retry" in out, out


def test_workspace_disk_quota_and_file_size_limit(tight):
    w = wid()
    create(tight, w)
    out = sh(tight, w, "for i in 1 2 3 4 5 6 7; do head -c 6M /dev/zero > f$i || echo FULL; done; du -sm .", 60)
    assert "No space left on device" in out or "FULL" in out, out
    exact = sh(tight, w, "rm -f f*; head -c 8M /dev/zero > ok && stat -c %s ok")
    assert "8388608" in exact  # the documented number is allowed ...
    over = bash(tight, w, "head -c 8388609 /dev/zero > over")  # ... one byte more is not
    assert over["code"] == 2001 and "size limit" in over["message"], over


def test_kernels_have_the_file_size_limit_too(tight):
    w = wid()
    create(tight, w, "code")
    # the close is inside the try: a write past the limit is cut short, the flush then fails
    code = ("def write(n):\n    try:\n        with open('f', 'wb') as fh:\n            fh.write(b'0' * n)\n"
            "        return 'ok'\n    except OSError as e:\n        return e.strerror\n"
            "(write(8 << 20), write((8 << 20) + 1))")
    res = tight.post("/execute", {"worker_id": w, "action": "code:run", "params": {"code": code}}).json()
    assert res["code"] == 0 and res["data"]["result"] == "('ok', 'File too large')", res


def _server_rss(srv) -> int:
    total = 0
    for pid in [srv.proc.pid, *srv.worker_pids()]:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
    return total << 10


def test_output_is_capped_while_it_streams(srv):
    w = wid()
    create(srv, w)
    create(srv, w, "code")
    before = _server_rss(srv)
    out = bash(srv, w, "head -c 300M /dev/zero | tr '\\0' x", timeout=120)
    assert out["data"]["stdout_bytes"] == 300 << 20 and out["data"]["stdout_truncated"] is True
    res = srv.post("/execute", {"worker_id": w, "action": "code:run",
                                "params": {"code": "for _ in range(300): print('y' * (1 << 20))", "timeout": 120}},
                   timeout=180).json()
    assert res["code"] == 0 and res["data"]["stdout_truncated"] is True, res.get("message")
    assert res["data"]["stdout_bytes"] == 300 * ((1 << 20) + 1)
    assert _server_rss(srv) - before < 100 << 20


def test_no_server_thread_waits_beyond_the_call_timeout(tight):
    w = wid()
    session = create(tight, w)
    state = tight.state_of(session["session_id"])
    frozen = cgroup_pids(state["jail"]["key"])
    for pid in frozen:  # the supervisor and everything else of the session stop answering
        os.kill(pid, 19)
    try:
        t0 = time.monotonic()
        out = bash(tight, w, "echo hi", timeout=1)
        assert out["code"] == 2002 and time.monotonic() - t0 < 15, out
        assert tight.get("/health", timeout=5).status_code == 200
    finally:
        for pid in frozen:
            os.kill(pid, 18)


def test_destroy_leaves_no_process_of_the_session(srv):
    w = wid()
    for resource in ("bash", "code"):
        session = create(srv, w, resource)
        if resource == "bash":
            sh(srv, w, "setsid sleep 300 > /dev/null 2>&1 < /dev/null & sleep 0.3; echo ok")
        state = srv.state_of(session["session_id"])
        assert session_pids(state)
        assert srv.post("/session/destroy", {"worker_id": w, "resource_type": resource}).json()["code"] == 0
        assert wait_until_gone(state) == []


# -- 8. fail closed ----------------------------------------------------------------------
def test_missing_bubblewrap_disables_the_confined_backends_with_what_to_install(tmp_path):
    bin_dir = tmp_path / "bin"  # a PATH with the usual tools but no bwrap
    bin_dir.mkdir()
    for tool in ("sh", "setsid", "setpriv", "unshare", "mount", "bash", "pgrep"):
        target = next((Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()), None)
        if target:
            (bin_dir / tool).symlink_to(target)
    server = start_server(tmp_path / "home", config={"resources": {**RESOURCES, "diag": {"enabled": True}}},
                          env={"PATH": str(bin_dir)})
    try:
        assert "backend 'bash' is disabled" in server.log_text()
        for resource in ("bash", "code", "ds"):
            out = server.post("/session/create", {"worker_id": wid(), "resource_type": resource}).json()
            assert out["code"] == 2003 and "apt-get install bubblewrap" in out["message"], out
            assert 'isolation to "none"' in out["message"]
        call = bash(server, wid(), "id")
        assert call["code"] == 2003 and "bubblewrap" in call["message"]
        report = server.get("/health").json()["isolation"]
        assert report["resources"]["bash"]["isolation"] == "unavailable"
        assert server.post("/execute", {"worker_id": wid(), "action": "diag:noop", "params": {}}).json()["code"] == 0
    finally:
        server.stop()


def test_isolation_none_is_explicit_and_stated(tmp_path):
    server = start_server(tmp_path / "home", config={"server": {"isolation": "none"}, "resources": RESOURCES})
    try:
        health = server.get("/health").json()
        assert health["isolation"]["mode"] == "none" and "not confined" in health["isolation"]["warning"]
        status = server.get("/warmup/status").json()["data"]
        assert status["isolation"]["mode"] == "none"
        assert 'isolation is "none"' in server.log_text()
        # unconfined, the kernel's pid is a host pid: it ends with its temporary session
        res = server.post("/execute", {"worker_id": wid(), "action": "code:run",
                                       "params": {"code": "__import__('os').getpid()"}}).json()
        assert res["code"] == 0 and res["meta"]["temporary_session"] is True, res
        kernel = Path(f"/proc/{int(res['data']['result'])}/status")

        def running() -> bool:
            try:
                return "zombie" not in kernel.read_text()
            except OSError:
                return False

        deadline = time.monotonic() + 10
        while running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running()
    finally:
        server.stop()
    confined = start_server(tmp_path / "home2", config={"resources": RESOURCES})
    try:
        report = confined.get("/health").json()["isolation"]
        assert report["mode"] == "bwrap" and report["resources"]["bash"]["network"] == "none"
    finally:
        confined.stop()
