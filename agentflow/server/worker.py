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

from gunicorn.workers.gthread import ThreadWorker

LINGER = 0.025
"""Seconds a thread that answered a request waits for the connection's next one."""


class LingeringThreadWorker(ThreadWorker):
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
