"""Group commit: concurrent requests of one process share one transaction.

A request hands its write (rows to insert or update, or a function of a SQLAlchemy
session) to the committer and returns only when the transaction holding it has
committed, so nothing is acknowledged before it is durable. The first waiting request
commits the writes of all the requests waiting with it (leader/followers), so a lone
request commits its own write without any thread handoff, and under load one
transaction serves many requests.

Row writes run straight on the driver (:mod:`agentflow.db.rows`); writes that need a
session (functions) take SQLAlchemy's ORM path. On sqlite both queue on one file lock
shared by the server's processes.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from sqlalchemy import Table, insert
from sqlalchemy.orm import Session, sessionmaker

from ..db.rows import RowWriter, process_write_lock

log = logging.getLogger(__name__)

WriteFn = Callable[[Session], Any]
Row = tuple[Any, dict]
"""``(table, values)`` to insert, or ``(statement, parameters)`` to execute."""
_MAX_BATCH = 256


class _Job:
    __slots__ = ("fn", "rows", "finished", "result", "error", "turn")

    def __init__(self, fn: WriteFn | None, rows: list[Row]):
        self.fn = fn
        self.rows = rows
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None
        # held until the job is finished or it is the job's turn to lead: its thread
        # sleeps on it, and exactly one release wakes exactly that thread
        self.turn = threading.Lock()
        self.turn.acquire()


class GroupCommitter:
    """Batches this process's writes into shared transactions."""

    def __init__(self, session_factory: sessionmaker[Session]):
        self._factory = session_factory
        engine = session_factory.kw["bind"]
        self._rows = RowWriter(engine)
        self._lock = process_write_lock(engine)
        self._mutex = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False

    def write(self, fn: WriteFn | None = None, rows: list[Row] | None = None) -> Any:
        """Run ``rows`` and then ``fn(session)`` in a committed transaction; return what
        ``fn`` returned.

        A row is ``(table, values)`` — an INSERT — or ``(statement, parameters)`` for a
        statement with bound parameters. The rows of many requests run as one
        ``executemany`` per table or statement, which is what makes an audited call
        cheap. Raises whatever the write raised (a failing job is retried alone, so it
        cannot fail its neighbours).
        """
        job = _Job(fn, rows or [])
        with self._mutex:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if not lead:
            job.turn.acquire()  # woken once: finished, or leading the next batch
        if not job.finished:
            self._lead()
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self) -> None:
        """Commit the pending writes (this thread's job first among them), wake each
        writer of the batch, and pass the lead to the oldest job still waiting.

        Waking only those threads (rather than every waiter, to find out which job
        finished) is what keeps a busy worker from spending its CPU switching threads.
        """
        with self._mutex:
            batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        try:
            self._commit(batch)
        finally:
            for job in batch:
                if not job.finished:  # interrupted before its transaction ended
                    job.error = job.error or RuntimeError("the write was interrupted")
                    job.finished = True
            with self._mutex:
                successor = self._pending[0] if self._pending else None
                self._leading = successor is not None
            for job in batch[1:]:
                job.turn.release()
            if successor is not None:
                successor.turn.release()

    def close(self) -> None:
        """Give up the row connection (writes run in the requests' own threads)."""
        with self._mutex:
            self._rows.close()

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
            job.finished = True

    def _transaction(self, jobs: list[_Job]) -> None:
        grouped: dict[Any, list[dict]] = {}
        for job in jobs:
            for target, values in job.rows:
                grouped.setdefault((target, tuple(values)), []).append(values)
        with self._lock:
            if all(job.fn is None for job in jobs):
                compiled = [(self._rows.compiled(t, keys), rows) for (t, keys), rows in grouped.items()]
                if all(c is not None for c, _ in compiled):
                    # rows only (the common case: audit rows, request records, session touches)
                    self._rows.run(compiled)
                    return
            with self._factory() as session, session.begin():
                for (target, _keys), values in grouped.items():
                    session.execute(insert(target) if isinstance(target, Table) else target, values)
                for job in jobs:
                    if job.fn is not None:
                        job.result = job.fn(session)
