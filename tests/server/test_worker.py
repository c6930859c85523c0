"""The gunicorn worker (agentflow/server/worker.py): a thread keeps serving a busy
keep-alive connection, without starving other connections or mixing up requests."""
from __future__ import annotations

import http.client
import json
import socket
import threading

import pytest

from tests.support.server import start_server


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("worker"), workers=1, threads=2)
    yield srv
    srv.stop()


def _body(worker: str, value) -> bytes:
    return json.dumps({"worker_id": worker, "action": "diag:echo", "params": {"value": value}}).encode()


def _headers(srv) -> dict:
    return {"Content-Type": "application/json", **srv.headers()}


def test_one_connection_serves_many_requests_in_order(small_server):
    conn = http.client.HTTPConnection("127.0.0.1", small_server.port, timeout=30)
    try:
        for i in range(30):
            conn.request("POST", "/execute", _body("w_seq", i), _headers(small_server))
            answer = conn.getresponse()
            assert answer.status == 200 and json.loads(answer.read())["data"] == {"value": i}
        assert conn.sock is not None  # still the first connection: it was kept alive throughout
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(small_server):
    """Two requests in one send: the second is already buffered when the first is answered."""
    head = "".join(f"{k}: {v}\r\n" for k, v in _headers(small_server).items())
    wire = b""
    for i in range(2):
        body = _body("w_pipe", i)
        wire += (f"POST /execute HTTP/1.1\r\nHost: 127.0.0.1:{small_server.port}\r\n{head}"
                 f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(("127.0.0.1", small_server.port), timeout=30) as sock:
        sock.sendall(wire)
        reader = sock.makefile("rb")
        values = []
        for _ in range(2):
            assert reader.readline().startswith(b"HTTP/1.1 200")
            length = None
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            values.append(json.loads(reader.read(length))["data"]["value"])
    assert values == [0, 1]


def test_more_connections_than_threads_are_all_served(small_server):
    """Six busy connections on a worker with two threads: none waits behind another's
    kept-alive connection."""
    results: dict[int, list] = {}

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", small_server.port, timeout=60)
        got = []
        try:
            for i in range(15):
                conn.request("POST", "/execute", _body(f"w_many_{n}", [n, i]), _headers(small_server))
                got.append(json.loads(conn.getresponse().read())["data"]["value"])
        finally:
            conn.close()
        results[n] = got

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert {n: got for n, got in results.items()} == {n: [[n, i] for i in range(15)] for n in range(6)}
