"""Framed JSON over a unix socket: the server's side of a supervisor conversation.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON. The server
sends one request per connection and reads one reply; the reply's size is capped and
the whole exchange has a deadline, because the supervisor runs as the session and may
be replaced by anything the session's code wants.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import time

from .errors import SupervisorError, SupervisorGone, SupervisorTimeout

__all__ = ["bind_unix", "connect_unix", "request", "read_frame", "write_frame"]

_HEADER = struct.Struct(">I")
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


def read_frame(sock: socket.socket, max_bytes: int, deadline: float | None = None) -> dict:
    """One frame as a dict. Raises SupervisorError on anything but a JSON object within
    ``max_bytes``."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size, deadline))
    if size > max_bytes:
        raise SupervisorError(f"the session supervisor sent {size} bytes, over the {max_bytes}-byte limit")
    try:
        value = json.loads(_recv_exact(sock, size, deadline))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise SupervisorError("the session supervisor sent a reply that is not JSON") from None
    if not isinstance(value, dict):
        raise SupervisorError("the session supervisor sent a reply that is not a JSON object")
    return value


def request(path: str, payload: dict, timeout: float, max_bytes: int) -> dict:
    """Send ``payload`` to the supervisor listening at ``path``; its reply.

    Raises:
        SupervisorTimeout: no full reply within ``timeout`` seconds.
        SupervisorError: the supervisor is gone or the reply is malformed or too big.
    """
    deadline = time.monotonic() + timeout
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
            write_frame(sock, payload)
        except (BrokenPipeError, ConnectionResetError):
            raise SupervisorError("the session supervisor closed the connection") from None
        except socket.timeout:
            raise SupervisorTimeout("the session supervisor did not take the call in time") from None
        try:
            return read_frame(sock, max_bytes, deadline)
        except ConnectionResetError:
            raise SupervisorError("the session supervisor closed the connection without an answer") from None
    finally:
        sock.close()
