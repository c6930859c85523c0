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
from agentflow.tools.code import CodeBackend
from tests.support.jail import session_pids, wait_until_gone

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _ctx(session, timeout=20.0, cap=65536) -> ToolContext:
    return ToolContext(worker_id="t", timeout=timeout, max_output_bytes=cap, session=session)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    home = tmp_path_factory.mktemp("code-home")
    return CodeBackend({}, BackendContext(data_dir=home, roots=[home], project_dir=home))


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
        before = session_pids(info.state)
        with pytest.raises(ToolError) as err:
            backend.run(_ctx(info), code="print('bye', flush=True)\nimport os; os._exit(3)")
        assert err.value.data["kernel_died"] is True and "exited with code 3" in str(err.value)
        out = backend.run(_ctx(info), code="'y' in globals()")
        assert out["kernel_restarted"] is True and out["result"] == "False"
        assert "died" in out["restart_reason"]
        after = session_pids(info.state)
        assert set(after) - set(before), "a fresh kernel process"
        assert backend.run(_ctx(info), code="1")["kernel_restarted"] is False
    finally:
        backend.destroy_session(info)


def test_destroy_kills_kernel_and_children(backend, tmp_path):
    info = SessionInfo("code_t_003", "t", "code", tmp_path, {}, {})
    backend.create_session(info)
    backend.run(_ctx(info), code="import subprocess; p = subprocess.Popen(['setsid', 'sleep', '300'])")
    assert len(session_pids(info.state)) >= 4  # bwrap, its init, supervisor, kernel, sleep
    backend.destroy_session(info)
    assert wait_until_gone(info.state) == []


def test_unknown_option_rejected(tmp_path):
    with pytest.raises(BackendConfigError, match="unknown option"):
        CodeBackend({"nope": 1}, BackendContext(data_dir=tmp_path, roots=[tmp_path]))


# -- through the real server (2 gunicorn workers) ------------------------------------
def _execute(server, worker, action, params, **extra):
    resp = server.post("/execute", {"worker_id": worker, "action": action, "params": params, **extra})
    return resp.json()


def _state(server, worker: str) -> str:
    with sqlite3.connect(server.home / "agentflow.db") as db:
        return db.execute("SELECT state FROM sessions WHERE worker_id = ? ORDER BY created_at DESC",
                          (worker,)).fetchone()[0]


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
    if os.geteuid() == 0:  # each session has a uid of its own
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
    state = _state(server, worker)
    assert session_pids(state)

    gone = server.post("/session/destroy", {"worker_id": worker, "resource_type": "code"}).json()
    assert gone["code"] == 0
    assert wait_until_gone(state) == []


def _session_cgroups() -> set[str]:
    return {p.name for p in Path("/sys/fs/cgroup").glob("*/agentflow/s*")}


def test_server_temporary_session_leaves_no_kernel(server):
    from agentflow.isolation.session import session_key

    env = _execute(server, "code-srv-2", "code:run", {"code": "__import__('os').getcwd()"})
    assert env["code"] == 0 and env["meta"]["temporary_session"] is True
    # the jail is named after its workspace folder: the session's own, or the pool entry's it took
    key = session_key(Path(ast.literal_eval(env["data"]["value"])).name)
    deadline = time.monotonic() + 10  # a pooled temporary session is ended just after its answer
    while key in _session_cgroups() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert key not in _session_cgroups()


def test_server_lists_code_tool_with_schema(server):
    tools = server.get("/tools").json()["data"]["tools"]
    (run,) = [t for t in tools if t["name"] == "code:run"]
    assert run["parameters"]["required"] == ["code"] and "timeout" in run["parameters"]["properties"]


def test_long_workspace_path_works(backend, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    info = SessionInfo("code_t_004", "t", "code", deep, {}, {})
    backend.create_session(info)
    try:
        assert backend.run(_ctx(info), code="2 + 2")["result"] == "4"
    finally:
        backend.destroy_session(info)


def test_busy_kernel_is_not_killed_by_a_second_client(backend, session):
    """A process that first connects while another call runs must wait, not kill the kernel."""
    import threading

    long = threading.Thread(target=lambda: backend.run(_ctx(session), code="import time; time.sleep(1.5); z = 7"))
    long.start()
    time.sleep(0.3)
    with pytest.raises(ToolTimeout) as err:
        backend.run(_ctx(session, timeout=0.5), code="1")
    long.join()
    assert err.value.data.get("kernel_busy") is True or err.value.data.get("interrupted") is True
    assert backend.run(_ctx(session), code="z")["result"] == "7"
