"""Group commit: one writer thread per process commits many requests' rows at once.

A request hands its write (a function of a SQLAlchemy session) to the writer and waits
until the transaction holding it has committed, so nothing is acknowledged before it
is durable — but concurrent requests share one transaction and one fsync.
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

WriteFn = Callable[[Session], Any]
Row = tuple[Any, dict]
"""``(table, values)`` to insert, or ``(statement, parameters)`` to execute."""
_MAX_BATCH = 256


class _Job:
    __slots__ = ("fn", "rows", "done", "result", "error")

    def __init__(self, fn: WriteFn | None, rows: list[Row]):
        self.fn = fn
        self.rows = rows
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Serialises this process's writes into batched transactions."""

    def __init__(self, session_factory: sessionmaker[Session]):
        self._factory = session_factory
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def write(self, fn: WriteFn | None = None, rows: list[Row] | None = None) -> Any:
        """Run ``rows`` and then ``fn(session)`` in a committed transaction; return what
        ``fn`` returned.

        A row is ``(table, values)`` — an INSERT — or ``(statement, parameters)`` for a
        statement with bound parameters. The rows of many requests run as one
        ``executemany`` per table or statement, which is what makes an audited call cheap. Raises whatever the write raised (a failing
        job is retried alone, so it cannot fail its neighbours).
        """
        self._ensure_thread()
        job = _Job(fn, rows or [])
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="agentflow-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._commit(batch)

    def _commit(self, batch: list[_Job]) -> None:
        try:
            self._transaction(batch)
        except Exception as err:  # noqa: BLE001 - handed back to the waiting request
            if len(batch) == 1:
                batch[0].error = err
            else:
                # One bad write must not fail its neighbours: retry each on its own.
                for job in batch:
                    try:
                        self._transaction([job])
                    except Exception as single_err:  # noqa: BLE001
                        job.error = single_err
        for job in batch:
            job.done.set()

    def _transaction(self, jobs: list[_Job]) -> None:
        grouped: dict[Any, list[dict]] = {}
        for job in jobs:
            for target, values in job.rows:
                grouped.setdefault(target, []).append(values)
        statements = [(insert(t) if isinstance(t, Table) else t, v) for t, v in grouped.items()]
        if all(job.fn is None for job in jobs):
            # rows only (the common case: audit rows, request records, session touches):
            # a Core connection skips the ORM session's bookkeeping
            with self._factory.kw["bind"].begin() as conn:
                for statement, values in statements:
                    conn.execute(statement, values)
            return
        with self._factory() as session, session.begin():
            for statement, values in statements:
                session.execute(statement, values)
            for job in jobs:
                if job.fn is not None:
                    job.result = job.fn(session)
