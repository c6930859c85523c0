"""A cluster of AgentFlow sandbox nodes for a test module (or a benchmark): one fresh
PostgreSQL database, N nodes (``agentflow serve`` under gunicorn, each with its own data
and workspace folders), and nginx from Debian as a round-robin balancer in front.

Each node runs in its **own mount namespace**, so it cannot see the other nodes' files:

- every node's files live in ``<base>/hidden/<name>`` (host path, 0700);
- the node is started as ``unshare --mount --propagation private -- sh -c '…; exec agentflow serve'``,
  which bind-mounts its own ``hidden/<name>`` on ``<base>/<name>`` (the path the node is
  configured with: its data dir, workspace dir and temp dir are below it), then mounts an
  empty tmpfs over ``<base>/hidden`` and ``exec``s the server — so the pid we started is
  the gunicorn master, and the node sees only its own folder. Every other node's
  ``<base>/<other>`` is an empty folder in its view, and so is it in the host's view: a
  session's recorded workspace (or control socket) path resolves on its owner only.
- mounts made by the node (session workspaces) stay in its namespace (private propagation).

A call that is not forwarded to the owner therefore fails instead of quietly reaching
the owner's kernel through a shared filesystem. The files stay on the host under
``hidden/``, so a node restarted with the same name finds its data again, as a real
machine would.

Needs root (mounts), ``unshare`` (util-linux) and ``nginx`` (Debian package ``nginx``);
the caller skips with the reason :func:`cluster_problem` gives. Sessions are confined
with bubblewrap when the machine can (see :func:`confinement_problem`), else the nodes
run with ``AGENTFLOW_ISOLATION=none`` and :attr:`Cluster.isolation` says so.

Usage (a module-scoped fixture)::

    @pytest.fixture(scope="module")
    def cluster(postgres_url, tmp_path_factory, request):
        with start_cluster(tmp_path_factory.mktemp("cluster"), postgres_url, node_lease=3) as c:
            yield c
            c.report_if_failed(request)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import requests

from tests.support.server import REPO, free_port

NODE_NAMES = ("node-a", "node-b", "node-c", "node-d", "node-e")

_NS_SCRIPT = (
    'set -e; mount --bind "$1" "$2"; mount -t tmpfs -o mode=0700,size=1m agentflow-hidden "$3"; '
    'shift 3; exec "$@"'
)


# -- what the machine must have --------------------------------------------------------

def cluster_problem() -> str | None:
    """Why a cluster cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the cluster harness needs root (each node gets its own mount namespace)"
    for tool in ("unshare", "mount", "nsenter"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (Debian package util-linux)"
    if nginx_path() is None:
        return "nginx is not installed (Debian package nginx)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"unshare --mount does not work here: {probe.stderr.decode(errors='replace').strip()[:200]}"
    return None


def nginx_path() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def confinement_problem() -> str | None:
    """Why sessions cannot be confined with bubblewrap here (None: they can). The same
    probe the server makes (agentflow.isolation.session)."""
    try:
        from agentflow.isolation.session import _probe_bwrap
    except ImportError:  # pragma: no cover - the probe moved; ask bwrap directly
        bwrap = shutil.which("bwrap")
        if bwrap is None:
            return "bubblewrap (bwrap) is not installed"
        res = subprocess.run([bwrap, "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev",
                              "true"], capture_output=True)
        return None if res.returncode == 0 else res.stderr.decode(errors="replace")[:300]
    return _probe_bwrap()


# -- one node ---------------------------------------------------------------------------

@dataclass
class Node:
    """One node. Paths are as the node sees them (``root``, ``data_dir``,
    ``workspace_dir``); ``store`` is where the same files are on the host."""

    name: str
    node_id: str
    port: int
    root: Path
    store: Path
    log_path: Path
    config_path: Path
    env: dict[str, str]
    cgroup_parent: str
    proc: subprocess.Popen | None = None
    mnt_ns: str | None = None
    """The mount namespace of the running incarnation (``mnt:[inode]``)."""
    namespaces: set[str] = field(default_factory=set)
    """Every incarnation's: processes left in one are ended at teardown."""
    pids_seen: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def addr(self) -> str:
        """``host:port`` as nginx's ``$upstream_addr`` names it."""
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "home"

    @property
    def workspace_dir(self) -> Path:
        return self.root / "workspaces"

    @property
    def pid(self) -> int:
        """The gunicorn master (the process we started: unshare and sh ``exec`` it)."""
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def worker_pids(self) -> list[int]:
        """The master's gunicorn workers (children running the master's own command
        line; session jails are children of the master too, as their reaper)."""
        if not self.alive():
            return []
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        try:
            master = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return []
        workers = []
        for pid in (int(x) for x in out.split()):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes() == master:
                    workers.append(pid)
            except OSError:
                pass
        return workers

    def child_pids(self) -> list[int]:
        if not self.alive():
            return []
        out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def host_path(self, node_path: str | os.PathLike) -> Path:
        """Where a path of this node's view (below ``root``) is on the host."""
        return self.store / Path(node_path).relative_to(self.root)

    def sees(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` exists in this node's view of the filesystem (its mount
        namespace, through ``/proc/<master>/root``)."""
        return os.path.lexists(f"/proc/{self.pid}/root{Path(path).absolute()}")

    def run_inside(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` in this node's mount namespace (``nsenter --mount``): what the
        server process itself can open."""
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "--", *argv], capture_output=True, text=True,
                              **kw)


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Killed:
    """When a node was killed (``kill -9`` of its master) and when its last worker
    was gone (``time.monotonic()``)."""

    killed_at: float
    gone_at: float
    workers: tuple[int, ...] = ()
    """The master's workers at the kill."""

    def workers_running(self) -> list[int]:
        return [p for p in self.workers if _running(p)]


class Cluster:
    """A running cluster: ``balancer_url``, ``nodes`` (name → :class:`Node`), ``db_url``,
    ``token``, ``isolation``; helpers to call it, query its database, read nginx's access
    log, kill and restart nodes."""

    def __init__(self, base: Path, db_url: str, names: Iterable[str], *, token: str, node_lease: float,
                 max_sessions: int | None, workers: int, threads: int, isolation: str, config: dict | None,
                 env: dict | None):
        self.base = base
        self.db_url = db_url
        self.token = token
        self.node_lease = node_lease
        self.max_sessions = max_sessions
        self.workers, self.threads = workers, threads
        self.isolation = isolation
        self.extra_config = config or {}
        self.extra_env = env or {}
        self.run_tag = uuid.uuid4().hex[:8]
        (base / "hidden").mkdir(mode=0o700, exist_ok=True)
        (base / "logs").mkdir(exist_ok=True)
        (base / "config").mkdir(exist_ok=True)
        self.nodes: dict[str, Node] = {}
        for name in names:
            self.nodes[name] = self._new_node(name)
        self.nginx_dir = base / "nginx"
        self.nginx_port = free_port()
        self.nginx: subprocess.Popen | None = None

    # -- layout and start ---------------------------------------------------------------
    def _new_node(self, name: str) -> Node:
        root, store = self.base / name, self.base / "hidden" / name
        root.mkdir(mode=0o700, exist_ok=True)
        for sub in ("home", "workspaces", "tmp"):
            (store / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        port = free_port()
        cgroup_parent = f"agentflow-cluster-{self.run_tag}-{name}"
        server: dict[str, Any] = {"host": "127.0.0.1", "port": port, "data_dir": str(root / "home"),
                                  "workspace_dir": str(root / "workspaces"), "cgroup_parent": cgroup_parent}
        if self.max_sessions is not None:
            server["max_sessions"] = self.max_sessions
        config = {**self.extra_config, "server": {**server, **self.extra_config.get("server", {})}}
        config_path = self.base / "config" / f"{name}.json"
        config_path.write_text(json.dumps(config, indent=1))
        env = {
            "AGENTFLOW_HOME": str(root / "home"),
            "AGENTFLOW_DATABASE_URL": self.db_url,
            "AGENTFLOW_API_TOKEN": self.token,
            "AGENTFLOW_NODE_ID": name,
            "AGENTFLOW_NODE_URL": f"http://127.0.0.1:{port}",
            "AGENTFLOW_NODE_LEASE": f"{self.node_lease:g}",
            "TMPDIR": str(root / "tmp"),
            **self.extra_env,
        }
        if self.isolation == "none":
            env["AGENTFLOW_ISOLATION"] = "none"
        return Node(name=name, node_id=name, port=port, root=root, store=store,
                    log_path=self.base / "logs" / f"{name}.log", config_path=config_path, env=env,
                    cgroup_parent=cgroup_parent)

    def _spawn(self, node: Node) -> None:
        cmd = [sys.executable, "-m", "agentflow.cli", "serve", "--config", str(node.config_path),
               "--port", str(node.port), "--workers", str(self.workers), "--threads", str(self.threads)]
        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _NS_SCRIPT, "sh",
                str(node.store), str(node.root), str(self.base / "hidden"), *cmd]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("AGENTFLOW_") or k == "AGENTFLOW_TEST_TMPDIR"}
        env.update(node.env)
        log = open(node.log_path, "ab")
        try:
            log.write(f"--- harness: starting {node.name} on port {node.port} at {time.strftime('%X')}\n".encode())
            log.flush()
            node.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        node.mnt_ns = None

    def _wait_up(self, nodes: list[Node], wait: float) -> None:
        deadline = time.monotonic() + wait
        pending = list(nodes)
        while pending:
            for node in list(pending):
                if node.proc.poll() is not None:
                    raise ClusterError(f"{node.name} exited with {node.proc.returncode}:\n{node.log_text()[-6000:]}")
                try:
                    if requests.get(node.url + "/health", timeout=1).status_code == 200:
                        node.mnt_ns = os.readlink(f"/proc/{node.pid}/ns/mnt")
                        if node.mnt_ns == os.readlink("/proc/self/ns/mnt"):
                            raise ClusterError(f"{node.name} runs in the harness's own mount namespace")
                        if b"agentflow.cli" not in Path(f"/proc/{node.pid}/cmdline").read_bytes():
                            raise ClusterError(f"{node.name}: pid {node.pid} is not the gunicorn master "
                                               "(unshare and sh must exec it)")
                        node.namespaces.add(node.mnt_ns)
                        pending.remove(node)
                except (requests.RequestException, OSError):
                    pass
            if pending and time.monotonic() > deadline:
                raise ClusterError("no /health within %ss from %s:\n%s" % (
                    wait, ", ".join(n.name for n in pending), "\n".join(n.log_text()[-4000:] for n in pending)))
            if pending:
                time.sleep(0.1)

    def start(self, wait: float = 90.0) -> "Cluster":
        """Start every node at the same moment (on an empty database they race to
        migrate it), wait for each to answer and register, and start nginx."""
        for node in self.nodes.values():
            self._spawn(node)
        self._wait_up(list(self.nodes.values()), wait)
        self._start_nginx()
        self._check_registered(list(self.nodes.values()))
        return self

    def _check_registered(self, nodes: list[Node], wait: float = 15.0) -> None:
        """Every node has its row in ``nodes`` (live) and is still running: a node
        whose master halted after its first /health (a worker that failed to boot)
        is caught here, with its log."""
        deadline = time.monotonic() + wait
        while True:
            dead = [n for n in nodes if not n.alive()]
            if dead:
                raise ClusterError("stopped after starting: %s\n%s" % (
                    ", ".join(n.name for n in dead), "\n".join(n.log_text()[-6000:] for n in dead)))
            try:
                live = {r["node_id"] for r in self.sql("select node_id from nodes where status = 'live'")}
            except Exception:  # noqa: BLE001 - no nodes table: the server side predates the cluster
                live = set()
            if {n.node_id for n in nodes} <= live and all(len(n.worker_pids()) == self.workers for n in nodes):
                time.sleep(0.3)  # a worker failing to boot halts its master: let that show
                if all(n.alive() and len(n.worker_pids()) == self.workers for n in nodes):
                    return
            if time.monotonic() > deadline:
                raise ClusterError(f"not registered as live in the nodes table within {wait}s: "
                                   f"{sorted({n.node_id for n in nodes} - live)}\n{self.logs()}")
            time.sleep(0.1)

    def start_node(self, name: str, wait: float = 60.0) -> Node:
        """Start (or restart) one node: same name, node_id, port and files."""
        node = self.nodes[name]
        if node.alive():
            raise ClusterError(f"{name} is running")
        self._wait_port_free(node)
        self._spawn(node)
        self._wait_up([node], wait)
        self._check_registered([node])
        return node

    def _wait_port_free(self, node: Node, wait: float = 10.0) -> None:
        """After a kill -9 of the master its workers exit on their own (within a
        second when idle, up to gunicorn's graceful_timeout while connections keep
        them busy); a restart needs the port back, so what is left after ``wait``
        seconds is killed."""
        import socket

        deadline = time.monotonic() + wait
        while True:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind(("127.0.0.1", node.port))
                    return
                except OSError:
                    pass
            if time.monotonic() > deadline:
                self._kill_namespace(node)
                deadline = time.monotonic() + wait
            time.sleep(0.1)

    def _nginx_conf(self) -> str:
        d = self.nginx_dir
        servers = "\n".join(f"        server {n.addr} max_fails=1 fail_timeout=2s;" for n in self.nodes.values())
        return f"""# generated by tests/support/cluster.py
user root;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log notice;
events {{ worker_connections 1024; }}
http {{
    log_format agentflow '$msec $request_method $uri $status up=$upstream_addr rid=$http_x_request_id '
                         'rt=$request_time urt=$upstream_response_time';
    access_log {d}/access.log agentflow;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream agentflow {{
        # round robin, no stickiness (no ip_hash, hash or sticky)
{servers}
        keepalive 32;
        keepalive_timeout 30s;   # below gunicorn's keepalive (75 s): nginx closes idle ones first
    }}
    server {{
        listen 127.0.0.1:{self.nginx_port};
        client_max_body_size 16m;
        client_body_buffer_size 1m;
        location / {{
            proxy_pass http://agentflow;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # Only a node that could not be reached is skipped: a request already sent
            # (a POST may have run) is never re-sent to another node.
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
            proxy_read_timeout 700s;
            proxy_send_timeout 700s;
        }}
    }}
}}
"""

    def _start_nginx(self, wait: float = 15.0) -> None:
        d = self.nginx_dir
        d.mkdir(exist_ok=True)
        (d / "nginx.conf").write_text(self._nginx_conf())
        log = open(d / "stdout.log", "ab")
        try:
            self.nginx = subprocess.Popen([nginx_path(), "-c", str(d / "nginx.conf"), "-p", str(d), "-e",
                                           str(d / "error.log"), "-g", "daemon off;"],
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.nginx.poll() is not None:
                raise ClusterError(f"nginx exited with {self.nginx.returncode}:\n{self.nginx_log()}")
            try:
                if requests.get(self.balancer_url + "/health", timeout=1).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise ClusterError(f"nginx did not answer within {wait}s:\n{self.nginx_log()}")

    # -- addresses and calls ----------------------------------------------------------
    @property
    def balancer_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def url(self, node: str | None = None) -> str:
        """The balancer's URL, or one node's."""
        return self.balancer_url if node is None else self.nodes[node].url

    def node_by_addr(self, addr: str) -> Node | None:
        return next((n for n in self.nodes.values() if n.addr == addr), None)

    def headers(self, request_id: str | None = None) -> dict:
        h = {"Authorization": f"Bearer {self.token}"}
        if request_id:
            h["X-Request-ID"] = request_id
        return h

    def post(self, path: str, body: dict, node: str | None = None, *, request_id: str | None = None,
             timeout: float = 60) -> requests.Response:
        """One raw POST (no client retries), through the balancer or to ``node``,
        always with an ``X-Request-ID`` (a fresh one when not given)."""
        return requests.post(self.url(node) + path, json=body, timeout=timeout,
                             headers=self.headers(request_id or uuid.uuid4().hex))

    def execute(self, worker_id: str, action: str, params: dict, node: str | None = None, **kw) -> dict:
        """``POST /execute`` → the envelope (any code), with ``_http`` (status) and
        ``_request_id`` added."""
        rid = kw.pop("request_id", None) or uuid.uuid4().hex
        resp = self.post("/execute", {"worker_id": worker_id, "action": action, "params": params}, node,
                         request_id=rid, **kw)
        return {**resp.json(), "_http": resp.status_code, "_request_id": rid}

    def create_session(self, worker_id: str, resource: str, node: str | None = None, config: dict | None = None,
                       **kw) -> requests.Response:
        return self.post("/session/create", {"worker_id": worker_id, "resource_type": resource,
                                             "config": config or {}}, node, **kw)

    def destroy_session(self, worker_id: str, resource: str, node: str | None = None) -> requests.Response:
        return self.post("/session/destroy", {"worker_id": worker_id, "resource_type": resource}, node)

    def sandbox(self, worker_id: str | None = None, node: str | None = None, **kw):
        """The real client, :class:`agentflow.sandbox.Sandbox`, through the balancer (or at ``node``)."""
        from agentflow.sandbox import Sandbox

        return Sandbox(server_url=self.url(node), worker_id=worker_id, api_token=self.token, **kw)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``agentflow <args>`` as an operator runs it on a machine of the cluster."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLOW_")}
        env["AGENTFLOW_TEST_TMPDIR"] = os.environ.get("AGENTFLOW_TEST_TMPDIR", "")
        return subprocess.run([sys.executable, "-m", "agentflow.cli", *args], cwd=self.base, env=env,
                              capture_output=True, text=True, timeout=timeout)

    # -- the shared database ------------------------------------------------------------
    def sql(self, query: str, **params) -> list[dict]:
        """Rows (as dicts) of a query on the cluster's database."""
        from sqlalchemy import create_engine, text

        engine = create_engine(self.db_url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(query), params)
                return [dict(r._mapping) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def psql(self, query: str) -> str:
        """The same through the ``psql`` client (tab-separated, no headers)."""
        from sqlalchemy.engine import make_url

        u = make_url(self.db_url)
        out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-F", "\t", "-h", u.host or "127.0.0.1",
                              "-p", str(u.port or 5432), "-U", u.username or "postgres", "-d", u.database,
                              "-c", query], capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise ClusterError(f"psql failed: {out.stderr}")
        return out.stdout

    def session_row(self, session_id: str) -> dict:
        rows = self.sql("select * from sessions where id = :i", i=session_id)
        if not rows:
            raise ClusterError(f"no session {session_id!r} in the database")
        row = rows[0]
        if isinstance(row.get("state"), str):
            row["state"] = json.loads(row["state"])
        return row

    def wait_for(self, predicate, wait: float, what: str, step: float = 0.1):
        """Poll ``predicate()`` until truthy (returned) or ``wait`` seconds pass."""
        deadline = time.monotonic() + wait
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {wait}s waiting for {what}")
            time.sleep(step)

    # -- nginx's view: which node each request entered at ------------------------------
    def access_log(self) -> list[dict]:
        """nginx's access log: ``{method, uri, status, upstream (node name or addr), request_id}``
        per request; ``upstream`` is the node that finally took it (after a skipped,
        unreachable one)."""
        out = []
        try:
            lines = (self.nginx_dir / "access.log").read_text(errors="replace").splitlines()
        except OSError:
            return out
        pattern = re.compile(r"^(\S+) (\S+) (\S+) (\d+) up=(.*?) rid=(\S*) rt=")
        for line in lines:
            m = pattern.match(line)
            if not m:
                continue
            ups = [u for u in re.split(r"\s*,\s*|\s+:\s+", m.group(5).strip()) if u and u != "-"]
            last = ups[-1] if ups else "-"
            node = self.node_by_addr(last)
            out.append({"time": float(m.group(1)), "method": m.group(2), "uri": m.group(3),
                        "status": int(m.group(4)), "upstream": node.name if node else last,
                        "tried": ups, "request_id": m.group(6) if m.group(6) != "-" else None})
        return out

    def entry_nodes(self, request_ids: Iterable[str]) -> dict[str, str]:
        """request id → the node nginx handed it to (the entry node)."""
        wanted = set(request_ids)
        return {e["request_id"]: e["upstream"] for e in self.access_log() if e["request_id"] in wanted}

    def nginx_log(self) -> str:
        parts = []
        for name in ("stdout.log", "error.log"):
            try:
                parts.append((self.nginx_dir / name).read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    # -- faults -----------------------------------------------------------------------
    def kill(self, name: str, wait_workers: float = 30.0, *, whole: bool = False) -> "Killed":
        """``kill -9`` of the node's gunicorn master, as after a crash of the master.

        Its workers notice within a second, stop accepting connections and exit once
        their open ones are done — kept-alive connections (nginx's, other nodes'
        forwarding pools) that keep carrying requests hold them for up to gunicorn's
        ``graceful_timeout`` (20 s), serving as before. This waits up to
        ``wait_workers`` seconds for them to be gone (0: not at all). ``whole``: kill
        every process of the node at once instead (master, workers and session
        processes: a machine that dies). Returns the monotonic times of the kill and
        of the moment its workers were gone (with ``wait_workers`` 0: of the kill)."""
        node = self.nodes[name]
        workers = node.worker_pids()
        node.pids_seen.update(node.child_pids())
        t = time.monotonic()
        os.kill(node.pid, signal.SIGKILL)
        if whole:
            self._kill_namespace(node)
        node.proc.wait(10)
        wait_workers = max(wait_workers, 10.0) if whole else wait_workers
        deadline = time.monotonic() + wait_workers
        while wait_workers and any(_running(p) for p in workers):
            if time.monotonic() > deadline:
                raise ClusterError(f"{name}'s workers {workers} outlived their master by {wait_workers}s")
            time.sleep(0.01)
        return Killed(t, time.monotonic(), tuple(workers))

    def stop_node(self, name: str, wait: float = 20.0) -> None:
        """A graceful stop (SIGTERM to the master), then whatever is left is killed."""
        node = self.nodes[name]
        if node.alive():
            node.pids_seen.update(node.child_pids())
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(wait)
            except subprocess.TimeoutExpired:
                os.kill(node.pid, signal.SIGKILL)
                node.proc.wait(5)
        self._kill_namespace(node)

    def _kill_namespace(self, node: Node) -> None:
        """SIGKILL every process left of the node: its workers, processes in its mount
        namespace (unconfined sessions), and every process in its session cgroups."""
        doomed: set[int] = set()
        for pid in node.pids_seen:
            doomed.add(pid)
        if node.namespaces:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if os.readlink(f"/proc/{entry}/ns/mnt") in node.namespaces:
                            doomed.add(int(entry))
                    except OSError:
                        pass
        doomed |= set(_cgroup_pids(node.cgroup_parent))
        doomed.discard(os.getpid())
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        node.pids_seen.clear()

    # -- teardown and diagnostics -------------------------------------------------------
    def logs(self, tail: int = 8000) -> str:
        parts = [f"===== {n.name} ({n.url}) =====\n{n.log_text()[-tail:]}" for n in self.nodes.values()]
        parts.append(f"===== nginx =====\n{self.nginx_log()[-tail:]}")
        return "\n".join(parts)

    def report_if_failed(self, request, before: int = 0) -> None:
        """Print every node's log (and nginx's) when a test of the module failed."""
        if request.session.testsfailed > before:
            print(self.logs(), file=sys.stderr)

    def stop(self) -> None:
        if self.nginx is not None and self.nginx.poll() is None:
            self.nginx.send_signal(signal.SIGQUIT)
            try:
                self.nginx.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.nginx.pid, signal.SIGKILL)
                self.nginx.wait(5)
        for node in self.nodes.values():
            self.stop_node(node.name)
        for node in self.nodes.values():
            _remove_cgroups(node.cgroup_parent)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _cgroup_dirs(parent: str) -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [p for p in [*root.glob(parent), *root.glob(f"*/{parent}")] if p.is_dir()]


def _cgroup_pids(parent: str) -> list[int]:
    pids: set[int] = set()
    for top in _cgroup_dirs(parent):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(x) for x in procs.read_text().split())
            except OSError:
                pass
    return sorted(pids)


def _remove_cgroups(parent: str, wait: float = 5.0) -> None:
    """Remove the node's (empty) session cgroups; processes killed a moment ago may
    keep one busy briefly."""
    deadline = time.monotonic() + wait
    while True:
        left = []
        for top in _cgroup_dirs(parent):
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    left.append(d)
            try:
                top.rmdir()
            except OSError:
                left.append(top)
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.1)


def fresh_database(server_url: str) -> str:
    """A new, empty database on the PostgreSQL server of ``server_url`` (a URL of any
    database there); returns its URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(server_url)
    name = f"agentflow_cluster_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host=u.host or "127.0.0.1", port=u.port or 5432, user=u.username or "postgres",
                         password=u.password, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return u.set(database=name).render_as_string(hide_password=False)


def start_cluster(base: Path, postgres_url: str, nodes: int = 3, *, node_lease: float = 3.0,
                  max_sessions: int | None = None, workers: int = 2, threads: int = 8,
                  isolation: str | None = None, config: dict | None = None, env: dict | None = None,
                  token: str | None = None, wait: float = 90.0, migrate_first: bool = False) -> Cluster:
    """Start a cluster of ``nodes`` nodes on a fresh database of the PostgreSQL server
    at ``postgres_url``, behind nginx. ``isolation``: ``bwrap`` or ``none`` (default:
    bwrap when the machine can confine, else none). ``migrate_first``: migrate the
    database before the nodes start (default: they start at the same moment on the
    empty database and race to migrate it, as a cluster's first start does). Raises ClusterError (with the logs)
    when something does not come up; stops what it started in that case."""
    problem = cluster_problem()
    if problem:
        raise ClusterError(problem)
    if isolation is None:
        why = confinement_problem()
        isolation = "bwrap" if why is None else "none"
        if why:
            print(f"cluster: sessions are NOT confined ({why}); the nodes run with AGENTFLOW_ISOLATION=none",
                  file=sys.stderr)
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(base, fresh_database(postgres_url), NODE_NAMES[:nodes], token=token or uuid.uuid4().hex,
                      node_lease=node_lease, max_sessions=max_sessions, workers=workers, threads=threads,
                      isolation=isolation, config=config, env=env)
    if migrate_first:
        from agentflow.db import upgrade

        upgrade(cluster.db_url)
    try:
        return cluster.start(wait)
    except BaseException:
        cluster.stop()
        raise
