"""code backend: the kernel on its own, then ``code:run`` through the real server."""
from __future__ import annotations

import ast
import base64
import os
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from agentflow.tools.base import BackendConfigError, BackendContext, SessionInfo, ToolContext, ToolError, ToolTimeout
from agentflow.tools.code import CodeBackend, _usable_by_others
from agentflow.tools.kernel import KernelHandle, is_alive

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ctx(session, timeout=20.0, cap=65536) -> ToolContext:
    return ToolContext(worker_id="t", timeout=timeout, max_output_bytes=cap, session=session)


def _pids_in_session(sid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = raw[raw.rfind(")") + 2:].split()
            if fields[3] == str(sid) and fields[0] != "Z":
                found.append(int(entry))
    return found


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    home = tmp_path_factory.mktemp("code-home")
    return CodeBackend({"run_as": "server"}, BackendContext(data_dir=home, roots=[home], project_dir=home))


@pytest.fixture(scope="module")
def session(backend, tmp_path_factory):
    ws = tmp_path_factory.mktemp("ws")
    info = SessionInfo("code_t_001", "t", "code", ws, {}, {})
    backend.create_session(info)
    yield info
    backend.destroy_session(info)


def test_state_persists_and_outputs(backend, session):
    out = backend.run(_ctx(session), code="x = 41\nprint('hi')\nimport sys; print('oops', file=sys.stderr)\nx + 1")
    assert out["stdout"] == "hi\n" and out["stderr"] == "oops\n" and out["result"] == "42"
    assert out["kernel_restarted"] is False
    assert backend.run(_ctx(session), code="x")["result"] == "41"


def test_cwd_is_workspace(backend, session):
    out = backend.run(_ctx(session), code="import os; os.getcwd()")
    assert out["result"] == repr(str(session.workspace))


def test_exception_is_tool_error_with_traceback(backend, session):
    with pytest.raises(ToolError) as err:
        backend.run(_ctx(session), code="def f():\n    return 1 / 0\nf()")
    data = err.value.data
    assert data["error"]["ename"] == "ZeroDivisionError"
    assert "return 1 / 0" in data["error"]["traceback"] and "\x1b[" not in data["error"]["traceback"]
    assert backend.run(_ctx(session), code="x")["result"] == "41"  # kernel unharmed


def test_output_is_capped(backend, session):
    out = backend.run(_ctx(session, cap=1000), code="print('a' * 5000)")
    assert out["stdout_truncated"] is True and out["stdout_bytes"] == 5001 and len(out["stdout"]) == 1000


def test_matplotlib_figure_is_png(backend, session):
    pytest.importorskip("matplotlib")
    out = backend.run(_ctx(session), code="import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')")
    (image,) = out["images"]
    assert image["mime"] == "image/png" and base64.b64decode(image["data"]).startswith(PNG_MAGIC)


def test_timeout_interrupts_and_keeps_state(backend, session):
    t0 = time.monotonic()
    with pytest.raises(ToolTimeout) as err:
        backend.run(_ctx(session, timeout=1), code="import time\nprint('started', flush=True)\ntime.sleep(30)")
    assert time.monotonic() - t0 < 5
    assert err.value.data["stdout"] == "started\n" and err.value.data["interrupted"] is True
    assert err.value.data["error"]["ename"] == "KeyboardInterrupt"
    out = backend.run(_ctx(session), code="x")
    assert out["result"] == "41" and out["kernel_restarted"] is False


def test_crash_then_fresh_kernel(backend, tmp_path):
    info = SessionInfo("code_t_002", "t", "code", tmp_path, {}, {})
    backend.create_session(info)
    try:
        backend.run(_ctx(info), code="y = 1")
        old = KernelHandle.from_state(info.state["kernel"])
        with pytest.raises(ToolError) as err:
            backend.run(_ctx(info), code="print('bye', flush=True)\nimport os; os._exit(3)")
        assert err.value.data["kernel_died"] is True and "exited with code 3" in str(err.value)
        assert not is_alive(old)
        out = backend.run(_ctx(info), code="'y' in globals()")
        assert out["kernel_restarted"] is True and out["result"] == "False"
        assert "died" in out["restart_reason"]
        assert KernelHandle.from_state(info.state["kernel"]).pid != old.pid
        assert backend.run(_ctx(info), code="1")["kernel_restarted"] is False
    finally:
        backend.destroy_session(info)


def test_destroy_kills_kernel_and_children(backend, tmp_path):
    info = SessionInfo("code_t_003", "t", "code", tmp_path, {}, {})
    backend.create_session(info)
    handle = KernelHandle.from_state(info.state["kernel"])
    backend.run(_ctx(info), code="import subprocess; p = subprocess.Popen(['sleep', '300'])")
    assert len(_pids_in_session(handle.pid)) >= 2
    backend.destroy_session(info)
    assert not is_alive(handle)
    assert _pids_in_session(handle.pid) == []


def test_unknown_option_rejected(tmp_path):
    with pytest.raises(BackendConfigError, match="unknown option"):
        CodeBackend({"nope": 1}, BackendContext(data_dir=tmp_path, roots=[tmp_path]))


# -- through the real server (2 gunicorn workers) ------------------------------------
def _execute(server, worker, action, params, **extra):
    resp = server.post("/execute", {"worker_id": worker, "action": action, "params": params, **extra})
    return resp.json()


def _gone(pid: int, wait: float = 5.0) -> bool:
    """The process has exited (or is a zombie nobody has reaped yet)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def code_session(server):
    worker = "code-srv-1"
    created = server.post("/session/create", {"worker_id": worker, "resource_type": "code"}).json()
    assert created["code"] == 0, created
    yield worker
    server.post("/session/destroy", {"worker_id": worker, "resource_type": "code"})  # also after a failure


def test_server_state_across_workers_crash_timeout_figure_destroy(server, code_session):
    worker = code_session
    first = _execute(server, worker, "code:run", {"code": "import os\nn = 0\nos.getpid(), os.getuid()"})
    kernel_pid, kernel_uid = ast.literal_eval(first["data"]["result"])
    if os.geteuid() == 0 and _usable_by_others(sys.executable):  # then each kernel gets a uid of its own
        assert kernel_uid != 0
    for i in range(1, 9):
        env = _execute(server, worker, "code-run", {"code": "n += 1\nn"})
        assert env["code"] == 0 and env["data"]["result"] == str(i)
    # concurrent reads until both gunicorn workers have served the session (audit log)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            outs = list(pool.map(lambda _: _execute(server, worker, "code:run", {"code": "n"}), range(8)))
            assert all(o["code"] == 0 and o["data"]["result"] == "8" for o in outs), outs
            with sqlite3.connect(server.home / "agentflow.db") as db:
                pids = {row[0] for row in db.execute("SELECT server_pid FROM tool_calls WHERE worker_id = ?",
                                                     (worker,))}
            if len(pids) == 2:
                break
    assert len(pids) == 2, f"all calls went to one worker process: {pids}"

    fig = _execute(server, worker, "code:run", {"code": "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])"})
    assert base64.b64decode(fig["data"]["images"][0]["data"]).startswith(PNG_MAGIC)

    slow = _execute(server, worker, "code:run", {"code": "import time\ntime.sleep(20)", "timeout": 1})
    assert slow["code"] == 2002 and slow["data"]["interrupted"] is True
    assert _execute(server, worker, "code:run", {"code": "n"})["data"]["result"] == "8"

    crash = _execute(server, worker, "code:run", {"code": "import os\nos._exit(1)"})
    assert crash["code"] == 2001 and crash["data"]["kernel_died"] is True
    again = _execute(server, worker, "code:run", {"code": "'n' in globals()"})
    assert again["code"] == 0 and again["data"]["kernel_restarted"] is True and again["data"]["result"] == "False"
    new_pid = int(_execute(server, worker, "code:run", {"code": "__import__('os').getpid()"})["data"]["result"])
    assert new_pid != kernel_pid

    gone = server.post("/session/destroy", {"worker_id": worker, "resource_type": "code"}).json()
    assert gone["code"] == 0
    assert _gone(new_pid)


def test_server_temporary_session_leaves_no_kernel(server):
    env = _execute(server, "code-srv-2", "code:run", {"code": "__import__('os').getpid()"})
    assert env["code"] == 0 and env["meta"]["temporary_session"] is True
    assert _gone(int(env["data"]["result"]))


def test_server_lists_code_tool_with_schema(server):
    tools = server.get("/tools").json()["data"]["tools"]
    (run,) = [t for t in tools if t["name"] == "code:run"]
    assert run["parameters"]["required"] == ["code"] and "timeout" in run["parameters"]["properties"]


def test_long_workspace_path_puts_sockets_in_short_dir(backend, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    info = SessionInfo("code_t_004", "t", "code", deep, {}, {})
    backend.create_session(info)
    socket_dir = info.state["kernel"]["socket_dir"]
    assert socket_dir and len(socket_dir) < 40
    assert backend.run(_ctx(info), code="2 + 2")["result"] == "4"
    backend.destroy_session(info)
    assert not Path(socket_dir).exists()


def test_busy_kernel_is_not_killed_by_a_second_client(backend, session):
    """A process that first connects while another call runs must wait, not kill the kernel."""
    import threading

    from agentflow.tools import kernel as kernel_mod

    long = threading.Thread(target=lambda: backend.run(_ctx(session), code="import time; time.sleep(1.5); z = 7"))
    long.start()
    time.sleep(0.3)
    kernel_mod.close_clients()  # what a fresh worker process sees: no cached connection
    with pytest.raises(ToolTimeout) as err:
        backend.run(_ctx(session, timeout=0.5), code="1")
    long.join()
    assert err.value.data.get("kernel_busy") is True or err.value.data.get("interrupted") is True
    assert backend.run(_ctx(session), code="z")["result"] == "7"
