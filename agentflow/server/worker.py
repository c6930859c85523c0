"""The gunicorn worker class: gthread, with a connection served by one thread while it
keeps sending.

gunicorn's gthread worker hands each keep-alive request from its event loop to a pool
thread and back: per request, the socket leaves and rejoins the poller, a future and a
wake-up byte cross between threads, and two thread switches happen. For the no-op
call that round trip cost as much CPU as the audited call itself. Agent workers send
their next call on the same connection moments after an answer, so the thread that
answered waits a little for it (:data:`LINGER`) and serves it directly. It does so
only while the worker has at least as many threads as connections, so a waiting
thread never keeps another connection from being served; otherwise, and when nothing
arrives in time, the connection goes back to the event loop as in gthread.
"""
from __future__ import annotations

import select
import time

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

LINGER = 0.025
"""Seconds a thread that answered a request waits for the connection's next one."""


class LingeringThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = _SettledConfig(self.cfg)

    def handle(self, conn):  # noqa: ANN001 - gunicorn's signature
        keep = super().handle(conn)
        while keep is True and self.alive and self.nr_conns <= self.cfg.threads and not conn.is_http2:
            if not conn.parser.unreader.buf.getvalue() and not _readable(conn.sock, LINGER):
                break
            keep = super().handle(conn)
        return keep


def _readable(sock, timeout: float) -> bool:
    poller = select.poll()
    try:
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    except (OSError, ValueError):  # closed meanwhile: the event loop cleans it up
        return False


class _SettledConfig:
    """A worker's view of gunicorn's Config that reads each setting once.

    Config resolves every attribute through ``__getattr__`` and ``Setting.get()``, and
    a request reads dozens of them (limits, header policy, keep-alive); a worker's
    settings never change after its fork (a reload starts new workers)."""

    def __init__(self, cfg):  # noqa: ANN001 - gunicorn's Config
        object.__setattr__(self, "_cfg", cfg)

    def __getattr__(self, name: str):
        value = getattr(self._cfg, name)
        object.__setattr__(self, name, value)
        return value


_http_date = util.http_date
_date_cache: tuple[int, str] = (0, "")


def _http_date_of_this_second(timestamp: float | None = None) -> str:
    """gunicorn's ``http_date`` (the ``Date`` header of every response), formatted once
    a second rather than once a response."""
    global _date_cache
    if timestamp is not None:
        return _http_date(timestamp)
    second = int(time.time())
    if _date_cache[0] != second:
        _date_cache = (second, _http_date(second))
    return _date_cache[1]


util.http_date = _http_date_of_this_second
