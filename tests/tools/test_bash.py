"""bash backend and the supervisor channel under it.

First the channel against a fake supervisor (kept connections, the ACK that says a
request was taken, hostile answers), then ``bash:run`` on a real confined session: a call
is a job of the session's forking shell, and what a command sees and leaves behind is
what a fresh shell would give it.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from agentflow.isolation import SupervisorError, SupervisorGone, SupervisorTimeout, channel
from agentflow.tools.base import BackendContext, SessionInfo, ToolContext, ToolError, ToolTimeout
from agentflow.tools.bash import BashBackend
from tests.support.jail import session_pids


# -- the channel, against a fake supervisor -------------------------------------------
class FakeSupervisor:
    """Listens at ``path``; ``behave(n_on_connection, request)`` says what to do with
    each request: "answer", "close" (before the ACK), "ack-close" (after it), "noack"
    (answer the old way), "extra" (answer, then send stray bytes)."""

    def __init__(self, path: str, behave):
        self.path, self.behave = path, behave
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        channel.bind_unix(self.listener, path)
        self.listener.listen(16)
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self.handled: list[dict] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        n = 0
        with conn:
            while True:
                try:
                    request = channel.read_frame(conn, 1 << 20)
                except Exception:  # noqa: BLE001
                    return
                n += 1
                what = self.behave(n, request)
                if what == "close":
                    return
                try:
                    if what != "noack":
                        conn.sendall(channel.ACK)
                except OSError:
                    return
                self.handled.append(request)
                if what == "ack-close":
                    return
                channel.write_frame(conn, {"ok": True, "n": n, "echo": request.get("x")})
                if what == "extra":
                    conn.sendall(b"\0\0\0\2{}")
                if what == "noack":
                    return  # an old supervisor: one request per connection

    def stop(self) -> None:
        """As a dying supervisor: the listener and every connection close."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (a close alone would not)
        except OSError:
            pass
        self.listener.close()
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def sock_path(tmp_path):
    path = str(tmp_path / "s.sock")
    yield path
    channel.forget(path)


def _call(path, x, timeout=5.0):
    return channel.request(path, {"op": "t", "x": x}, timeout, 1 << 20)


def test_a_connection_is_kept_and_used_again(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "answer")
    try:
        assert [_call(sock_path, i)["n"] for i in range(5)] == [1, 2, 3, 4, 5]
        assert fake.accepted == 1
    finally:
        fake.stop()


def test_a_kept_connection_the_supervisor_closed_is_replaced(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "ack-close" if n == 2 else "answer")
    try:
        assert _call(sock_path, 1)["echo"] == 1
        with pytest.raises(SupervisorError, match="without an answer"):  # taken, then it ended: may have run
            _call(sock_path, 2)
        assert _call(sock_path, 3)["echo"] == 3  # a fresh connection
        assert fake.accepted == 2
    finally:
        fake.stop()


def test_a_kept_connection_that_ends_before_the_ack_is_retried_once_on_a_fresh_one(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "close" if n == 2 else "answer")
    try:
        assert _call(sock_path, 1)["echo"] == 1
        assert _call(sock_path, 2)["echo"] == 2  # the kept connection ended unread: sent again, ran once
        assert [r["x"] for r in fake.handled] == [1, 2] and fake.accepted == 2
    finally:
        fake.stop()


def test_a_fresh_connection_that_ends_before_the_ack_means_the_call_never_ran(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "close")
    try:
        with pytest.raises(SupervisorGone):
            _call(sock_path, 1)
        assert fake.handled == []
    finally:
        fake.stop()


def test_a_call_after_the_supervisor_died_fails_clearly(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "answer")
    assert _call(sock_path, 1)["ok"]
    fake.stop()  # nothing listens any more; the kept connection is still open on our side
    with pytest.raises(SupervisorGone, match="not running"):
        _call(sock_path, 2)
    os.unlink(sock_path)
    with pytest.raises(SupervisorGone, match="not running"):
        _call(sock_path, 3)


def test_stray_bytes_on_a_kept_connection_are_never_read_as_an_answer(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "extra")
    try:
        assert _call(sock_path, 1)["echo"] == 1
        time.sleep(0.05)  # the stray bytes have arrived
        assert _call(sock_path, 2) == {"ok": True, "n": 1, "echo": 2}  # a fresh connection's first answer
        assert fake.accepted == 2
    finally:
        fake.stop()


def test_a_supervisor_that_sends_no_ack_still_works(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "noack")
    try:
        assert [_call(sock_path, i)["echo"] for i in range(3)] == [0, 1, 2]
    finally:
        fake.stop()


def test_a_silent_supervisor_times_out_and_its_connection_is_dropped(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "answer" if n == 1 else (time.sleep(1.5), "answer")[1])
    try:
        assert _call(sock_path, 1)["ok"]
        with pytest.raises(SupervisorTimeout):
            _call(sock_path, 2, timeout=0.5)
        time.sleep(1.2)  # its late answer arrives on the dropped connection, not on the next call's
        assert _call(sock_path, 3)["echo"] == 3
    finally:
        fake.stop()


def test_kept_connections_are_not_shared_with_a_forked_child(sock_path):
    fake = FakeSupervisor(sock_path, lambda n, r: "answer")
    try:
        _call(sock_path, 1)
        pid = os.fork()
        if pid == 0:  # the child makes a connection of its own
            try:
                os._exit(0 if _call(sock_path, 2)["n"] == 1 else 1)
            except BaseException:  # noqa: BLE001
                os._exit(2)
        assert os.waitpid(pid, 0)[1] == 0
        assert _call(sock_path, 3)["n"] == 2  # the parent's connection was not used by the child
    finally:
        fake.stop()


# -- bash:run on a confined session -----------------------------------------------------
def _ctx(session, timeout=20.0, cap=65536) -> ToolContext:
    return ToolContext(worker_id="t", timeout=timeout, max_output_bytes=cap, session=session)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    home = tmp_path_factory.mktemp("bash-home")
    return BashBackend({}, BackendContext(data_dir=home, roots=[home], project_dir=home))


@pytest.fixture
def session(backend, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    info = SessionInfo(f"bash_t_{os.urandom(4).hex()}", "t", "bash", ws, {}, {})
    backend.create_session(info)
    yield info
    backend.destroy_session(info)


def run(backend, session, command, **kw):
    return backend.run(_ctx(session, **kw), command=command)


def test_state_persists_and_exit_codes_and_signals(backend, session):
    assert run(backend, session, "mkdir -p d && cd d && export A=1 B='x y'; C=local")["exit_code"] == 0
    out = run(backend, session, 'pwd; echo "$A|$B|${C-unset}"')
    assert out["stdout"] == f"{session.workspace}/d\n1|x y|unset\n"
    assert run(backend, session, "exit 7")["exit_code"] == 7
    assert run(backend, session, "f() { return 4; }; f")["exit_code"] == 4
    out = run(backend, session, "echo partial; kill -9 $BASHPID")
    assert out["exit_code"] == -9 and out["signal"] == "SIGKILL" and out["stdout"] == "partial\n"
    assert run(backend, session, "echo $A")["stdout"] == "1\n"  # a killed command keeps the previous state


def test_a_command_sees_a_fresh_shell(backend, session):
    out = run(backend, session, "set -o | grep -E '^monitor'; trap -p | grep -v __af_save; "
                                "grep SigIgn /proc/self/status; ulimit -t; "
                                "echo \"[${__af_sup-}${__af_in-}${__af_pid-}${__af_cpu-}${__af_cwd-}]\"; cat")
    lines = out["stdout"].splitlines()
    assert lines[0].split() == ["monitor", "off"]  # job control off: what it starts stays in its group
    assert lines[1] == "SigIgn:\t0000000000000000"  # no signal ignored (SIGINT included)
    assert lines[2] == "600" and lines[3] == "[]"  # the CPU limit; none of the forking shell's variables
    assert out["exit_code"] == 0  # stdin is empty


def test_timeout_kills_the_whole_group_and_the_next_call_works(backend, session):
    with pytest.raises(ToolTimeout) as err:
        run(backend, session, "echo started; sleep 300 | cat & sleep 300", timeout=1)
    assert err.value.data["stdout"] == "started\n"
    assert "sleep" not in run(backend, session, "ps -eo args")["stdout"]
    assert run(backend, session, "echo ok")["stdout"] == "ok\n"


def test_a_command_that_kills_its_forking_shell_gets_its_result_and_the_next_call_a_new_one(backend, session):
    out = run(backend, session, "export K=v; kill -9 $$; echo still")
    assert out["stdout"] == "still\n" and out["exit_code"] == 0, out
    out = run(backend, session, "echo $K; kill -TERM $$; echo again")
    assert out["stdout"] == "v\nagain\n" and out["exit_code"] == 0
    assert run(backend, session, "echo $K")["stdout"] == "v\n"


def test_calls_of_one_session_at_once_all_run(backend, session):
    results: list = [None] * 4

    def one(i: int) -> None:
        results[i] = run(backend, session, f"sleep 0.3; echo {i}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r["stdout"] for r in results] == [f"{i}\n" for i in range(4)]


def test_output_caps_and_a_large_command(backend, session):
    out = run(backend, session, "head -c 100000 /dev/zero | tr '\\0' a; echo err >&2", cap=1000)
    assert out["stdout_bytes"] == 100000 and out["stdout_truncated"] and len(out["stdout"]) == 1000
    assert out["stderr"] == "err\n"
    big = "x=" + "y" * 300_000 + "; echo ${#x}"
    assert run(backend, session, big)["stdout"] == "300000\n"


def test_a_dead_supervisor_is_restarted_for_the_next_call(backend, session):
    run(backend, session, "cd /tmp")
    with pytest.raises(ToolError):
        run(backend, session, "kill -9 -1")  # everything of the session, its supervisor included
    out = run(backend, session, "pwd")
    assert out["sandbox_restarted"] is True and out["stdout"] == f"{session.workspace}\n"
    assert session_pids(session.state)


def test_kept_connections_are_capped(tmp_path, monkeypatch):
    monkeypatch.setattr(channel._Idle, "TOTAL", 3)
    paths = [str(tmp_path / f"s{i}.sock") for i in range(6)]
    fakes = [FakeSupervisor(p, lambda n, r: "answer") for p in paths]
    try:
        for p in paths:
            _call(p, 1)
        assert channel._idle.count == 3 and sum(len(v) for v in channel._idle.conns.values()) == 3
        assert set(channel._idle.conns) == set(paths[3:])  # the most recently used are kept
    finally:
        for p, f in zip(paths, fakes):
            channel.forget(p)
            f.stop()
