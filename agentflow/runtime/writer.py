"""Group commit: concurrent requests of one process share one transaction.

A request hands its write (rows to insert or update, or a function of a SQLAlchemy
session) to the committer and returns only when the transaction holding it has
committed, so nothing is acknowledged before it is durable. The first waiting request
commits the writes of all the requests waiting with it (leader/followers), so a lone
request commits its own write without any thread handoff, and under load one
transaction serves many requests.
"""
from __future__ import annotations

import logging
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
    __slots__ = ("fn", "rows", "finished", "result", "error")

    def __init__(self, fn: WriteFn | None, rows: list[Row]):
        self.fn = fn
        self.rows = rows
        self.finished = False
        self.result: Any = None
        self.error: BaseException | None = None


class GroupCommitter:
    """Batches this process's writes into shared transactions."""

    def __init__(self, session_factory: sessionmaker[Session]):
        self._factory = session_factory
        self._cond = threading.Condition()
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
        with self._cond:
            self._pending.append(job)
            while not job.finished:
                if self._leading:
                    self._cond.wait()
                    continue
                self._lead()
        if job.error is not None:
            raise job.error
        return job.result

    def _lead(self) -> None:
        """Commit the pending writes (called holding the condition; releases it while
        the transaction runs)."""
        self._leading = True
        batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
        self._cond.release()
        try:
            self._commit(batch)
        finally:
            self._cond.acquire()
            for job in batch:
                if not job.finished:  # interrupted before its transaction ended
                    job.error = job.error or RuntimeError("the write was interrupted")
                    job.finished = True
            self._leading = False
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to stop: writes run in the requests' own threads."""

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
