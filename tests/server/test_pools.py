"""Warm session pools (agentflow.isolation.pool): temporary ``bash`` / ``code`` sessions
and ``code`` session create take a pre-started confined session, shared by the workers.

Through the real server (2 gunicorn workers, confined), then the hand-out protocol on
its own: processes racing for entries, and entries whose starter died.
"""
from __future__ import annotations

import ast
import json
import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import pytest

from agentflow.isolation.pool import SessionPool
from agentflow.isolation.session import control_dir, session_key
from agentflow.processes import owner_id
from agentflow.tools.base import BackendConfigError, BackendContext
from agentflow.tools.bash import BashBackend
from tests.support.server import start_server

POOL = 2


def _pool_dir(srv, resource: str) -> Path:
    return control_dir((srv.home / "workspaces").resolve()) / "pool" / resource


def _ready(srv, resource: str) -> dict[str, str]:
    """{entry id: workspace} of the ready entries."""
    out = {}
    for path in _pool_dir(srv, resource).glob("*.ready"):
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out[entry["id"]] = entry["workspace"]
    return out


def _wait_full(srv, resource: str, size: int, wait: float = 120.0) -> dict[str, str]:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        ready = _ready(srv, resource)
        if len(ready) >= size:
            return ready
        time.sleep(0.1)
    raise AssertionError(f"the {resource} pool did not fill to {size}: {_ready(srv, resource)}\n{srv.log_text()[-3000:]}")


def _run(srv, worker, action, params, timeout=60):
    env = srv.post("/execute", {"worker_id": worker, "action": action, "params": params}, timeout=timeout).json()
    assert env["code"] == 0, env
    return env


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    config = {"resources": {"bash": {"config": {"pool_size": POOL}}, "code": {"config": {"pool_size": POOL}}}}
    srv = start_server(tmp_path_factory.mktemp("pool-home"), config=config)
    yield srv
    srv.stop()


def test_pooled_temporary_bash_is_fresh_and_its_own_uid(pooled):
    srv = pooled
    owned = _run(srv, "pool-owner", "bash:run", {"command": "true"})  # a temporary call, so no session yet
    created = srv.post("/session/create", {"worker_id": "pool-owner", "resource_type": "bash"}).json()
    assert created["code"] == 0, created
    live_uid = _run(srv, "pool-owner", "bash:run", {"command": "id -u"})["data"]["stdout"].strip()
    ready = _wait_full(srv, "bash", POOL)
    first = _run(srv, "pool-tmp", "bash:run",
                 {"command": "pwd; id -u; ls -A | wc -l; echo secret > left.txt; export LEFT=1; cd /tmp"})
    assert first["meta"]["temporary_session"] is True and owned["meta"]["temporary_session"] is True
    cwd, uid, count = first["data"]["stdout"].split()
    assert cwd in ready.values(), "the temporary session took a ready pool entry"
    assert count == "0", "a pooled workspace is handed out empty"
    assert uid != "0" and uid != live_uid, "its own uid, not another live session's"
    second = _run(srv, "pool-tmp", "bash:run",
                  {"command": "pwd; ls -A | wc -l; echo ${LEFT:-unset}; cat left.txt 2>/dev/null || echo none"})
    cwd2, count2, left, text = second["data"]["stdout"].split()
    assert cwd2 != cwd
    assert (count2, left, text) == ("0", "unset", "none"), "nothing of the earlier call is left"
    # used entries are never returned; the pool refills to its size with new ones
    refilled = _wait_full(srv, "bash", POOL)
    assert not {cwd, cwd2} & set(refilled.values())
    for used in (cwd, cwd2):  # ended just after the call: processes, mount and folder
        key = session_key(Path(used).name)
        deadline = time.monotonic() + 15
        while (Path(used).exists() or (control_dir(Path(used).parent) / f"{key}.json").exists()) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(used).exists() and not os.path.ismount(used)
    srv.post("/session/destroy", {"worker_id": "pool-owner", "resource_type": "bash"})


def test_pooled_temporary_code_has_a_clean_namespace(pooled):
    srv = pooled
    ready = _wait_full(srv, "code", POOL)
    probe = "import os\nx = 41\nos.getcwd(), os.getuid(), sorted(k for k in globals() if not k.startswith('_'))"
    first = _run(srv, "pool-code", "code:run", {"code": probe})
    cwd, uid, names = ast.literal_eval(first["data"]["value"])
    assert cwd in ready.values() and uid != 0
    assert first["data"]["execution_count"] == 1, "no earlier cell ran in the handed-out kernel"
    assert set(names) <= {"In", "Out", "exit", "get_ipython", "quit", "open", "os", "x"}
    second = srv.post("/execute", {"worker_id": "pool-code", "action": "code:run", "params": {"code": "x"}}).json()
    assert second["code"] == 2001 and "NameError" in second["message"], "a variable of an earlier call is gone"


def test_code_session_create_takes_a_warm_kernel(pooled):
    srv = pooled
    ready = _wait_full(srv, "code", POOL)
    created = srv.post("/session/create", {"worker_id": "pool-create", "resource_type": "code"}).json()
    assert created["code"] == 0, created
    sid = created["data"]["session_id"]
    workspace = str(srv.workspace_of(sid))
    assert workspace in ready.values(), "the session's recorded workspace is the pool entry's"
    assert not (srv.home / "workspaces" / sid).exists(), "the planned folder is not left behind"
    _run(srv, "pool-create", "code:run", {"code": "n = 5"})
    again = _run(srv, "pool-create", "code:run", {"code": "import os\nn + 1, os.getcwd()"})
    assert ast.literal_eval(again["data"]["value"]) == (6, workspace)
    assert srv.post("/session/destroy", {"worker_id": "pool-create", "resource_type": "code"}).json()["code"] == 0
    assert not Path(workspace).exists()


def test_concurrent_temporary_calls_get_distinct_entries(tmp_path):
    size = 6
    srv = start_server(tmp_path / "home", config={"resources": {"bash": {"config": {"pool_size": size}},
                                                                "code": {"config": {"pool_size": 0}}}})
    try:
        ready = _wait_full(srv, "bash", size)
        results: list[dict] = []
        lock = threading.Lock()

        def call(i: int) -> None:
            env = _run(srv, f"race-{i}", "bash:run", {"command": "sleep 1; pwd; id -u"})
            with lock:
                results.append(env)

        threads = [threading.Thread(target=call, args=(i,)) for i in range(size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(results) == size
        cwds = [r["data"]["stdout"].split()[0] for r in results]
        uids = [r["data"]["stdout"].split()[1] for r in results]
        assert len(set(cwds)) == size and len(set(uids)) == size, (cwds, uids)
        assert set(cwds) <= set(ready.values()), "every call took a pool entry, none the same"
    finally:
        srv.stop()


def test_pool_size_zero_turns_pooling_off(tmp_path):
    srv = start_server(tmp_path / "home", config={"resources": {"bash": {"config": {"pool_size": 0}},
                                                                "code": {"config": {"pool_size": 0}}}})
    try:
        env = _run(srv, "nopool", "bash:run", {"command": "pwd"})
        assert Path(env["data"]["stdout"].strip()).name.startswith("tmp_bash_nopool_")
        created = srv.post("/session/create", {"worker_id": "nopool", "resource_type": "code"}).json()
        assert created["code"] == 0
        assert srv.workspace_of(created["data"]["session_id"]).name == created["data"]["session_id"]
        assert not [p for r in ("bash", "code") for p in _pool_dir(srv, r).glob("*.ready")]
    finally:
        srv.stop()


@pytest.mark.parametrize("value", [-1, "two", 1.5, True, None])
def test_bad_pool_size_is_refused(tmp_path, value):
    with pytest.raises(BackendConfigError, match=r"resource 'bash': pool_size must be an integer"):
        BashBackend({"pool_size": value}, BackendContext(data_dir=tmp_path, roots=[], workspace_root=tmp_path))


def test_server_refuses_to_start_on_a_bad_pool_size(tmp_path):
    with pytest.raises(RuntimeError, match="pool_size must be an integer >= 0"):
        start_server(tmp_path / "home", config={"resources": {"code": {"config": {"pool_size": -2}}}})


# -- the hand-out protocol on its own ---------------------------------------------------
class _FakeConfinement:
    def __init__(self):
        self.stopped: list[str] = []

    def stop(self, session) -> None:
        self.stopped.append(session.session_id)


def _fake_entry(pool: SessionPool, eid: str, owner: str) -> None:
    workspace = pool.root / eid
    workspace.mkdir()
    jail = {"socket": str(pool.root / f"{eid}.sock"), "key": session_key(eid), "pid": os.getpid(), "uid": None,
            "mounted": False, "mode": "none"}
    (pool.folder / f"{eid}.ready").write_text(json.dumps({"id": eid, "workspace": str(workspace), "jail": jail,
                                                           "owner": owner}))


def _claim_all(args) -> list[str]:
    root, start = args
    from agentflow.tools.base import SessionInfo

    pool = SessionPool(_FakeConfinement(), "bash", 1, Path(root), lambda info: None)
    start.wait()
    got = []
    while True:
        info = SessionInfo(f"tmp_bash_w_{os.getpid()}_{len(got)}", "w", "bash", Path(root) / "x", {}, {}, True)
        if not pool.take(info):
            return got
        got.append(Path(info.workspace).name)


def test_racing_processes_never_take_the_same_entry(tmp_path):
    pool = SessionPool(_FakeConfinement(), "bash", 1, tmp_path, lambda info: None)
    ids = [f"pool_bash_{i:04d}" for i in range(200)]
    for eid in ids:
        _fake_entry(pool, eid, owner_id())
    ctx = mp.get_context("fork")
    start = ctx.Manager().Event()
    with ctx.Pool(4) as procs:
        waiting = procs.map_async(_claim_all, [(str(tmp_path), start)] * 4)
        time.sleep(0.5)
        start.set()
        taken = [eid for part in waiting.get(120) for eid in part]
    assert sorted(taken) == ids, "every entry handed out exactly once"
    assert not list(pool.folder.glob("*.ready"))


def test_entries_of_a_dead_starter_are_ended(tmp_path):
    fake = _FakeConfinement()
    pool = SessionPool(fake, "bash", 4, tmp_path, lambda info: None)
    dead = owner_id(os.getpid())[: -1] + "x"  # this node, a start time no process has
    _fake_entry(pool, "pool_bash_ready_dead", dead)
    _fake_entry(pool, "pool_bash_ready_live", owner_id())
    (pool.folder / "pool_bash_half.starting").write_text(dead)
    (tmp_path / "pool_bash_half").mkdir()
    (pool.folder / "pool_bash_busy.starting").write_text(owner_id())
    assert pool._reap() == 2
    assert sorted(fake.stopped) == ["pool_bash_half", "pool_bash_ready_dead"]
    assert sorted(p.name for p in pool.folder.glob("*.*")) == ["pool_bash_busy.starting", "pool_bash_ready_live.ready"]
    assert not (tmp_path / "pool_bash_half").exists() and not (tmp_path / "pool_bash_ready_dead").exists()


def test_the_cleaner_ends_orphaned_entries_of_a_pool_no_longer_run(tmp_path):
    """A server restarted with ``pool_size: 0`` runs no refill: its cleaner (session.sweep)
    still ends the entries a dead process left, and leaves a live one's alone."""
    from agentflow.isolation.session import JailRecord, _write_ledger, sweep
    from agentflow.tools.base import SessionInfo

    fake = _FakeConfinement()
    pool = SessionPool(fake, "code", 2, tmp_path, lambda info: None)
    dead = owner_id()[:-1] + "x"
    for eid, owner in (("pool_code_dead", dead), ("pool_code_live", owner_id())):
        _fake_entry(pool, eid, owner)
        info = SessionInfo(eid, "", "code", tmp_path / eid, {}, {}, True)
        info.pooled = f"code/{eid}"
        _write_ledger(control_dir(tmp_path), info, JailRecord(str(tmp_path / "s.sock"), session_key(eid), os.getpid(),
                                                               None, False, "none"))
    assert sweep(fake, tmp_path, lambda sid: False) == 1
    assert fake.stopped == ["pool_code_dead"]
    assert [p.name for p in pool.folder.glob("*.ready")] == ["pool_code_live.ready"]
    assert not (tmp_path / "pool_code_dead").exists() and (tmp_path / "pool_code_live").exists()


def test_a_session_cannot_see_or_poison_pool_entries(pooled):
    """From inside a session, the pool's files and the other entries' workspaces do not
    exist; whatever it writes at their paths lands in its own jail, and the entry is handed
    out untouched."""
    srv = pooled
    ready = _wait_full(srv, "bash", POOL)
    created = srv.post("/session/create", {"worker_id": "pool-attacker", "resource_type": "bash"}).json()
    assert created["code"] == 0, created
    targets = " ".join(ready.values())
    pool_folder = _pool_dir(srv, "bash")
    probe = _run(srv, "pool-attacker", "bash:run", {"command": (
        f"ls -d {pool_folder} {targets} 2>&1 | grep -c 'No such file'; "
        f"for w in {targets}; do mkdir -p $w 2>/dev/null && echo evil > $w/poison 2>/dev/null; done; "
        "ps -e -o pid= | wc -l")})
    missing, processes = probe["data"]["stdout"].split()
    assert int(missing) == 1 + len(ready), probe["data"]
    assert int(processes) < 10, "the session sees its own processes only"
    for _ in range(len(ready)):
        got = _run(srv, "pool-victim", "bash:run", {"command": "pwd; ls -A | wc -l"})["data"]["stdout"].split()
        if got[0] in ready.values():
            assert got[1] == "0", f"pool entry {got[0]} was handed out with files in it"
    srv.post("/session/destroy", {"worker_id": "pool-attacker", "resource_type": "bash"})
