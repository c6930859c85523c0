"""Load test of a running server: latency percentiles, throughput, errors, server CPU.

The load comes from several processes (threads inside each), so the client's own
Python does not cap what it measures. On a small machine the load generator shares
the cores with the server; the figure that compares servers is therefore the
*server CPU time per call* (give ``server_pid`` to measure it).

For ``http://`` URLs each client speaks HTTP/1.1 over its own keep-alive socket with
a prepared request (:class:`_KeepAliveClient`): ``requests`` spent about 1 CPU-ms per
call, more than the servers it measured, so on two cores it capped requests/s and
latency at the same figure for any server. ``https://`` URLs go through ``requests``.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import socket
import statistics
import threading
import time
import uuid
from collections import Counter
from typing import Callable
from pathlib import Path
from urllib.parse import urlsplit

import requests


@dataclasses.dataclass
class BenchResult:
    calls: int
    seconds: float
    latencies_ms: list[float]
    codes: Counter
    errors: Counter
    server_cpu_ms: float | None = None

    def summary(self) -> dict:
        lat = sorted(self.latencies_ms)

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p / 100 * len(lat)))], 3) if lat else 0.0

        out = {
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.calls / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "mean_ms": round(statistics.fmean(lat), 3) if lat else 0.0,
            "codes": {str(k): v for k, v in sorted(self.codes.items())},
            "errors": dict(self.errors),
        }
        if self.server_cpu_ms is not None:
            out["server_cpu_ms_per_call"] = round(self.server_cpu_ms / max(1, self.calls), 4)
        return out


def _cpu_ms(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total * 1000 / tick


def server_processes(pid: int) -> list[int]:
    """A gunicorn master and its workers (and their children, e.g. shells)."""
    found, frontier = [pid], [pid]
    while frontier:
        parent = frontier.pop()
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        for child in map(int, children):
            found.append(child)
            frontier.append(child)
    return found


def _worker(args: tuple) -> tuple[list[float], Counter, Counter, int]:
    url, action, params, threads, deadline, quota, token, worker_prefix, request_ids, worker_ids = args
    latencies: list[float] = []
    codes: Counter = Counter()
    errors: Counter = Counter()
    lock = threading.Lock()
    left = [quota]
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def loop(n: int) -> None:
        worker = worker_ids[n] if worker_ids else f"{worker_prefix}_{os.getpid()}_{n}"
        body = {"worker_id": worker, "action": action, "params": params}
        post = _poster(url, body, headers, request_ids)
        while time.monotonic() < deadline:
            with lock:
                if left[0] is not None:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
            t0 = time.perf_counter()
            try:
                code = post()
            except (OSError, requests.RequestException, ValueError) as err:
                with lock:
                    errors[type(err).__name__] += 1
                continue
            ms = (time.perf_counter() - t0) * 1000
            with lock:
                latencies.append(ms)
                codes[code] += 1

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return latencies, codes, errors, len(latencies)


def _poster(url: str, body: dict, headers: dict, request_ids: bool) -> Callable[[], int]:
    """A function that sends one ``POST /execute`` and returns the envelope's code."""
    if urlsplit(url).scheme == "http":
        return _KeepAliveClient(url, body, headers, request_ids).post
    session = requests.Session()

    def post() -> int:
        call_headers = {**headers, "X-Request-ID": uuid.uuid4().hex} if request_ids else headers
        r = session.post(url + "/execute", json=body, headers=call_headers, timeout=120)
        return r.json().get("code", r.status_code)
    return post


class _KeepAliveClient:
    """One HTTP/1.1 keep-alive connection sending the same prepared ``POST /execute``.

    Only what a load generator needs: a ``Content-Length`` response (both servers
    send one); anything else, a closed socket included, raises and the next call
    reconnects.
    """

    def __init__(self, url: str, body: dict, headers: dict, request_ids: bool):
        parts = urlsplit(url)
        self._address = (parts.hostname or "127.0.0.1", parts.port or 80)
        data = json.dumps(body).encode()
        lines = [f"POST {parts.path.rstrip('/')}/execute HTTP/1.1", f"Host: {parts.netloc}",
                 "Content-Type: application/json", f"Content-Length: {len(data)}",
                 *(f"{k}: {v}" for k, v in headers.items())]
        self._head = ("\r\n".join(lines) + "\r\n").encode()
        self._body = b"\r\n" + data
        self._request_ids = request_ids
        self._sock: socket.socket | None = None
        self._buf = b""

    def post(self) -> int:
        rid = b"X-Request-ID: " + uuid.uuid4().hex.encode() + b"\r\n" if self._request_ids else b""
        try:
            sock = self._connect()
            sock.sendall(self._head + rid + self._body)
            status, close, body = self._response(sock)
        except BaseException:
            self._drop()
            raise
        if close:
            self._drop()
        return json.loads(body).get("code", status)

    def _connect(self) -> socket.socket:
        if self._sock is None:
            self._sock = socket.create_connection(self._address, timeout=120)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._buf = b""
        return self._sock

    def _response(self, sock: socket.socket) -> tuple[int, bool, bytes]:
        while b"\r\n\r\n" not in self._buf:
            self._fill(sock)
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
        if "content-length" not in fields:
            raise ValueError("the response has no Content-Length")
        length = int(fields["content-length"])
        while len(self._buf) < length:
            self._fill(sock)
        body, self._buf = self._buf[:length], self._buf[length:]
        return int(status_line.split()[1]), fields.get("connection", "").lower() == "close", body

    def _fill(self, sock: socket.socket) -> None:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self._buf += chunk

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self._buf = None, b""


def run_bench(url: str, action: str = "diag:noop", params: dict | None = None, concurrency: int = 8,
              duration: float | None = 10.0, requests_total: int | None = None, processes: int | None = None,
              token: str | None = None, server_pid: int | None = None, warmup_calls: int = 20,
              request_ids: bool = True, worker_ids: list[str] | None = None) -> BenchResult:
    """Drive ``POST /execute`` with ``concurrency`` clients; see the module docstring.

    With ``request_ids`` every call carries its own ``X-Request-ID``, as the AgentFlow
    client sends it (the server then also records the call for idempotent replay).
    ``worker_ids``: one per client, e.g. workers whose sessions were created beforehand
    (by default each client is a fresh worker, so session tools get temporary sessions).
    """
    url = url.rstrip("/")
    params = params or {}
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(warmup_calls):
        session.post(url + "/execute", json={"worker_id": "bench_warmup", "action": action, "params": params},
                     headers=headers, timeout=60)
    processes = max(1, min(processes or min(concurrency, os.cpu_count() or 1), concurrency))
    per_proc = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    limit = duration if duration else 3600.0
    quotas = [None] * processes
    if requests_total:
        quotas = [requests_total * n // concurrency for n in per_proc]
        quotas[0] += requests_total - sum(quotas)
    prefix = f"bench_{uuid.uuid4().hex[:6]}"
    pids = server_processes(server_pid) if server_pid else []
    cpu0 = _cpu_ms(pids) if pids else None
    t0 = time.monotonic()
    deadline = t0 + limit
    ids = list(worker_ids or [])
    if ids and len(ids) != concurrency:
        raise ValueError("worker_ids needs one id per client")
    starts = [sum(per_proc[:i]) for i in range(processes)]
    jobs = [(url, action, params, n, deadline, q, token, prefix, request_ids, ids[s:s + n] or None)
            for n, q, s in zip(per_proc, quotas, starts)]
    with mp.get_context("fork").Pool(processes) as pool:
        parts = pool.map(_worker, jobs)
    seconds = time.monotonic() - t0
    result = BenchResult(0, seconds, [], Counter(), Counter())
    for lat, codes, errors, count in parts:
        result.latencies_ms.extend(lat)
        result.codes.update(codes)
        result.errors.update(errors)
        result.calls += count
    if pids:
        result.server_cpu_ms = _cpu_ms(server_processes(server_pid)) - cpu0
    return result


def format_summary(summary: dict, label: str = "") -> str:
    head = f"{label}: " if label else ""
    line = (f"{head}{summary['calls']} calls in {summary['seconds']} s = {summary['requests_per_s']} req/s; "
            f"latency p50 {summary['p50_ms']} ms, p90 {summary['p90_ms']} ms, p99 {summary['p99_ms']} ms")
    if "server_cpu_ms_per_call" in summary:
        line += f"; server CPU {summary['server_cpu_ms_per_call']} ms/call"
    line += f"; codes {json.dumps(summary['codes'])}"
    if summary["errors"]:
        line += f"; errors {json.dumps(summary['errors'])}"
    return line


def ratios(ours: dict, anchor: dict) -> dict:
    """ours/anchor of server CPU per call, p99 latency and requests/s, per row key."""
    out = {}
    for key, row in ours.items():
        base = anchor.get(key)
        if not base:
            continue
        out[key] = {"cpu": _ratio(row.get("server_cpu_ms_per_call"), base.get("server_cpu_ms_per_call")),
                    "p99": _ratio(row["p99_ms"], base["p99_ms"]),
                    "req_s": _ratio(row["requests_per_s"], base["requests_per_s"])}
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a is not None and b else None


def format_ratios(table: dict) -> list[str]:
    lines = ["ours / anchor (server CPU per call, p99, req/s)"]
    for key, r in table.items():
        lines.append(f"  c={key:<7} cpu {r['cpu']}x   p99 {r['p99']}x   req/s {r['req_s']}x")
    return lines
