"""Framed JSON over a unix socket: the server's side of a supervisor conversation.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. The server
sends a request and reads its reply; the reply's size is capped and the whole exchange
has a deadline, because the supervisor runs as the session and may be replaced by
anything the session's code wants.

A supervisor writes one byte, ``ACK``, as soon as it has read a request, before it
does anything: a connection that ends before that byte means the request never ran
(the supervisor was gone or dying), which is safe to say, and to retry on a fresh
connection; one that ends after it means the supervisor ended during the request.
(A frame header never starts with ``ACK``: that would be a frame over 4 GB.)

A connection whose exchange ended cleanly is kept (a few per socket, per process, for a
short while) and used for the next request to that supervisor, so a call does not pay
for a connect and a supervisor thread. A kept connection is used again only when
nothing is waiting on it: one the supervisor closed (it died or was restarted) or one
carrying bytes nobody asked for is dropped, and a fresh connection is made. A
connection on which anything went wrong is never kept.
"""
from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time

from .errors import SupervisorError, SupervisorGone, SupervisorTimeout

__all__ = ["bind_unix", "connect_unix", "forget", "request", "read_frame", "write_frame"]

_HEADER = struct.Struct(">I")
ACK = b"\xff"
_SUN_PATH = 100  # sun_path holds 108 bytes


def _short(path: str, call) -> None:
    """``call(address)`` with an address the kernel takes: a long path is reached through
    a descriptor of its folder (``/proc/self/fd/N/name``), so a socket can live beside
    the workspaces however deep they are."""
    if len(path.encode()) <= _SUN_PATH:
        call(path)
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        call(f"/proc/self/fd/{folder}/{os.path.basename(path)}")
    finally:
        os.close(folder)


def bind_unix(sock: socket.socket, path: str) -> None:
    _short(path, sock.bind)


def connect_unix(sock: socket.socket, path: str) -> None:
    _short(path, sock.connect)


def write_frame(sock: socket.socket, payload: dict) -> None:
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8", "surrogatepass")
    sock.sendall(_HEADER.pack(len(body)) + body)


def _recv_exact(sock: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, got = [], 0
    while got < size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SupervisorTimeout("the session supervisor did not answer in time")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(size - got, 1 << 20))
        except socket.timeout:
            raise SupervisorTimeout("the session supervisor did not answer in time") from None
        if not chunk:
            raise SupervisorError("the session supervisor closed the connection without an answer")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket, max_bytes: int, deadline: float | None = None, head: bytes = b"") -> dict:
    """One frame as a dict (``head``: its first bytes, already read). Raises
    SupervisorError on anything but a JSON object within ``max_bytes``."""
    (size,) = _HEADER.unpack(head + _recv_exact(sock, _HEADER.size - len(head), deadline))
    if size > max_bytes:
        raise SupervisorError(f"the session supervisor sent {size} bytes, over the {max_bytes}-byte limit")
    try:
        value = json.loads(_recv_exact(sock, size, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SupervisorError("the session supervisor sent a reply that is not JSON") from None
    if not isinstance(value, dict):
        raise SupervisorError("the session supervisor sent a reply that is not a JSON object")
    return value


class _Idle:
    """This process's kept connections: socket path -> [(socket, when it was kept)]."""

    PER_PATH = 2  # each one holds a thread of the supervisor (and counts in its pids limit)
    TOTAL = 64
    MAX_AGE = 30.0  # seconds a kept connection may wait unused

    def __init__(self):
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.conns: dict[str, list[tuple[socket.socket, float]]] = {}
        self.count = 0

    def _forked(self) -> None:
        if self.pid != os.getpid():  # a forked child must not share its parent's connections
            self.pid, self.conns, self.count = os.getpid(), {}, 0

    def take(self, path: str) -> socket.socket | None:
        now = time.monotonic()
        while True:
            with self.lock:
                self._forked()
                kept = self.conns.get(path)
                if not kept:
                    return None
                sock, since = kept.pop()
                if not kept:
                    del self.conns[path]
                self.count -= 1
            if now - since <= self.MAX_AGE and _quiet(sock):
                return sock
            sock.close()

    def put(self, path: str, sock: socket.socket) -> None:
        now = time.monotonic()
        dropped = []
        with self.lock:
            self._forked()
            kept = self.conns.setdefault(path, [])
            if len(kept) >= self.PER_PATH:
                dropped.append(sock)
            else:
                kept.append((sock, now))
                self.count += 1
            if self.count > self.TOTAL:  # too many sessions at once: drop the stale, then the oldest
                entries = sorted(((since, other, c) for other, conns in self.conns.items() for c, since in conns),
                                 key=lambda e: e[0])
                excess = max(self.count - self.TOTAL, sum(1 for since, _, _ in entries if now - since > self.MAX_AGE))
                for since, other, c in entries[:excess]:
                    self.conns[other] = [(k, t) for k, t in self.conns[other] if k is not c]
                    if not self.conns[other]:
                        del self.conns[other]
                    dropped.append(c)
                self.count -= excess
        for sock in dropped:
            sock.close()

    def forget(self, path: str) -> None:
        """Close the kept connections to ``path`` (its session ended)."""
        with self.lock:
            self._forked()
            kept = self.conns.pop(path, [])
            self.count -= len(kept)
        for sock, _ in kept:
            sock.close()


_idle = _Idle()


def _quiet(sock: socket.socket) -> bool:
    """Nothing to read on a kept connection: neither end-of-file nor stray bytes."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


def forget(path: str) -> None:
    """Drop this process's kept connections to the supervisor at ``path``."""
    _idle.forget(path)


def request(path: str, payload: dict, timeout: float, max_bytes: int) -> dict:
    """Send ``payload`` to the supervisor listening at ``path``; its reply.

    Raises:
        SupervisorGone: nothing listens at ``path`` (the request never ran).
        SupervisorTimeout: no full reply within ``timeout`` seconds.
        SupervisorError: the supervisor is gone or the reply is malformed or too big.
    """
    deadline = time.monotonic() + timeout
    sock = _idle.take(path)
    if sock is not None:
        try:
            reply = _exchange(sock, payload, timeout, max_bytes, deadline)
        except _NotStarted:  # the supervisor had closed it, or ended before taking the call
            sock.close()
        except BaseException:
            sock.close()
            raise
        else:
            _idle.put(path, sock)
            return reply
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(0.05, timeout))
        try:
            connect_unix(sock, path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise SupervisorGone("the session supervisor is not running") from None
        except socket.timeout:
            raise SupervisorTimeout("the session supervisor did not accept the call in time") from None
        try:
            reply = _exchange(sock, payload, timeout, max_bytes, deadline)
        except _NotStarted:
            raise SupervisorGone("the session supervisor ended before it took the call") from None
    except BaseException:
        sock.close()
        raise
    _idle.put(path, sock)
    return reply


class _NotStarted(Exception):
    """The connection ended before the supervisor took the request: it never ran."""


def _exchange(sock: socket.socket, payload: dict, timeout: float, max_bytes: int, deadline: float) -> dict:
    sock.settimeout(max(0.05, timeout))
    try:
        write_frame(sock, payload)
    except (BrokenPipeError, ConnectionResetError):
        raise _NotStarted() from None
    except socket.timeout:
        raise SupervisorTimeout("the session supervisor did not take the call in time") from None
    try:
        try:
            first = _recv_exact(sock, 1, deadline)
        except SupervisorTimeout:
            raise
        except (SupervisorError, ConnectionResetError):
            raise _NotStarted() from None
        # a supervisor started by an earlier version answers without ACK
        return read_frame(sock, max_bytes, deadline, b"" if first == ACK else first)
    except ConnectionResetError:
        raise SupervisorError("the session supervisor closed the connection without an answer") from None
