"""Idempotent POSTs: a request with ``X-Request-ID`` runs once; retries get its answer.

The first arrival records the id as *pending* with its owner (node and pid, see
:func:`owner_id`); a retry that finds the id done replays the stored answer, one that
finds it pending waits for it while the owner lives.

When the owner died mid-run (a ``kill -9`` of its worker), what the request did is
unknown: it may have run to the end, half-way or not at all. Running it again could
do its side effect twice, so the retry does not: the record becomes *interrupted* and
every retry gets the same ``2004 interrupted`` answer (:class:`CallInterrupted`). Only
the endpoints in :data:`RESUMABLE` are taken over and run again, because running them
twice is harmless: a batch keeps one record per item (finished items are replayed,
the cut-off item answers 2004), and session create/list/refresh and warmup are
idempotent by nature.

Whether an owner lives is judged by its pid only on the same node (same host, boot
and pid namespace, so that pids mean the same process); an owner on another node
holds its claim for ``stale_after`` seconds (longer than any call may run).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import time
from typing import Callable

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db import isoformat, utcnow
from ..db.models import RequestRecord
from ..processes import owner_alive, owner_id
from .errors import CallInterrupted, MalformedRequest, RequestInProgress
from .jsontext import dumps_text
from .writer import GroupCommitter, Row

log = logging.getLogger(__name__)

STATUS_PENDING, STATUS_DONE, STATUS_INTERRUPTED = "pending", "done", "interrupted"
RESUMABLE = frozenset({"execute/batch", "session/create", "session/list", "session/refresh", "warmup"})
"""Endpoints whose claim a retry takes over from a dead owner (see the module doc)."""

_TABLE = RequestRecord.__table__
_FINISH = update(_TABLE).where(_TABLE.c.request_id == bindparam("b_rid")).values(
    status=STATUS_DONE, http_status=bindparam("b_status"), response=bindparam("b_response"),
    finished_at=bindparam("b_at"))
_RELEASE = delete(_TABLE).where(_TABLE.c.request_id == bindparam("b_rid"), _TABLE.c.status == STATUS_PENDING)
_REAP_MIN_AGE = 2.0  # seconds: a claim this young is left to begin() (its retry may be waiting already)


class Replay:
    """A stored answer to send again."""

    def __init__(self, http_status: int, body: dict):
        self.http_status = http_status
        self.body = body


def interrupted_answer(row: RequestRecord, reason: str) -> dict:
    """The ``2004`` envelope for a request whose execution was cut off."""
    err = CallInterrupted(
        f"the original execution of request {row.request_id!r} was cut off ({reason}); it may or may not "
        "have taken effect and is not run again. Check its effects before sending it again with a new "
        "X-Request-ID",
        {"request_id": row.request_id, "endpoint": row.endpoint, "started_at": isoformat(row.created_at),
         "interrupted_at": isoformat(utcnow()), "owner": row.owner, "reason": reason,
         "outcome": "unknown", "may_have_taken_effect": True})
    return {"code": err.code, "message": err.message, "data": err.data,
            "meta": {"request_id": row.request_id, "interrupted": True}}


class RequestLog:
    def __init__(self, read: sessionmaker[Session], writer: GroupCommitter, stale_after: float,
                 node_id: str | None = None, node_gone: Callable[[str], bool] | None = None):
        self._node_id = node_id
        self._node_gone = node_gone
        self._read = read
        self._writer = writer
        self._stale_after = stale_after
        self._owner = owner_id()

    def begin(self, request_id: str, endpoint: str, wait_limit: float, body_sha256: str | None = None) -> Replay | None:
        """Claim ``request_id``; return the stored answer when it already ran, or the
        2004 answer when its owner died running it (None: the caller runs it).

        Raises:
            MalformedRequest: the id was used before for another endpoint or body.
            RequestInProgress: a live owner is still running it after ``wait_limit``.
        """
        deadline = time.monotonic() + wait_limit
        while True:
            try:
                # the claim is an INSERT batched with other requests' writes; only a
                # retry pays for the lookup
                self._writer.write(rows=[(_TABLE, {
                    "request_id": request_id, "endpoint": endpoint, "body_sha256": body_sha256,
                    "status": STATUS_PENDING, "owner": self._owner, "created_at": utcnow(),
                    "node_id": self._node_id})])
                return None
            except IntegrityError:
                pass
            with self._read() as s:
                row = s.get(RequestRecord, request_id)
            if row is None:  # released meanwhile: claim again
                continue
            self._check_same_request(row, request_id, endpoint, body_sha256)
            if row.status != STATUS_PENDING:
                body = json.loads(row.response)
                body.setdefault("meta", {})["replayed"] = True
                return Replay(row.http_status or 200, body)
            reason = self._abandoned(row)
            if reason is None and time.monotonic() <= deadline:
                time.sleep(0.05)
                continue
            if endpoint in RESUMABLE:
                if self._writer.write(lambda s: self._take_over(s, request_id, row.owner)):
                    log.warning("request %s: taking it over from %s (%s)", request_id, row.owner,
                                reason or "waited too long")
                    return None
                continue
            if reason is None:
                raise RequestInProgress(
                    f"request {request_id!r} is still running in {row.owner} after {wait_limit:g} s; retry "
                    "later with the same X-Request-ID to get its answer", {"request_id": request_id})
            answer = self._interrupt(row, reason)
            if answer is not None:
                return Replay(CallInterrupted.http_status, answer)

    @staticmethod
    def _check_same_request(row: RequestRecord, request_id: str, endpoint: str, body_sha256: str | None) -> None:
        if row.endpoint != endpoint or (row.body_sha256 and body_sha256 and row.body_sha256 != body_sha256):
            # a retry repeats its request exactly; anything else must not get its answer
            what = f"POST /{row.endpoint}" if row.endpoint != endpoint else "a request with another body"
            raise MalformedRequest(
                f"X-Request-ID {request_id!r} was already used for {what}; send a new id for each "
                "request and reuse it only to retry that same request")

    def _abandoned(self, row: RequestRecord) -> str | None:
        """Why the pending ``row``'s owner can no longer answer, or None while it may."""
        alive = owner_alive(row.owner)
        if alive is False:
            return "the server process running it died"
        if alive is None and row.node_id and row.node_id != self._node_id and self._node_gone \
                and self._node_gone(row.node_id):
            return f"node {row.node_id}, which was running it, was lost (its lease expired)"
        age = (utcnow() - row.created_at).total_seconds()
        if alive is None and age > self._stale_after:
            return f"its server process on another node held it for {age:.0f} s, longer than any call may run"
        return None

    def _take_over(self, s: Session, request_id: str, old_owner: str) -> bool:
        res = s.execute(update(RequestRecord).where(
            RequestRecord.request_id == request_id, RequestRecord.owner == old_owner,
            RequestRecord.status == STATUS_PENDING).values(owner=self._owner, created_at=utcnow(),
                                                           node_id=self._node_id))
        return res.rowcount == 1

    def _interrupt(self, row: RequestRecord, reason: str) -> dict | None:
        """Turn the abandoned claim into its 2004 answer; None when another process
        changed the row first (the caller reads it again)."""
        answer = interrupted_answer(row, reason)

        def mark(s: Session) -> bool:
            res = s.execute(update(RequestRecord).where(
                RequestRecord.request_id == row.request_id, RequestRecord.owner == row.owner,
                RequestRecord.status == STATUS_PENDING).values(
                    status=STATUS_INTERRUPTED, http_status=CallInterrupted.http_status,
                    response=json.dumps(answer, default=str), finished_at=utcnow()))
            return res.rowcount == 1

        if not self._writer.write(mark):
            return None
        log.warning("request %s (%s) interrupted: %s", row.request_id, row.endpoint, reason)
        return answer

    def _drop(self, row: RequestRecord) -> bool:
        def drop(s: Session) -> bool:
            return s.execute(delete(RequestRecord).where(
                RequestRecord.request_id == row.request_id, RequestRecord.owner == row.owner,
                RequestRecord.status == STATUS_PENDING)).rowcount == 1

        return self._writer.write(drop)

    def reap_abandoned(self) -> int:
        """End the pending claims of owners that died, for the cleaner: a resumable
        request's claim is dropped (a retry runs it afresh), any other becomes
        interrupted (a retry gets 2004). Returns how many were ended."""
        with self._read() as s:
            rows = s.scalars(select(RequestRecord).where(
                RequestRecord.status == STATUS_PENDING,
                RequestRecord.created_at < utcnow() - dt.timedelta(seconds=_REAP_MIN_AGE))).all()
        ended = 0
        for row in rows:
            reason = self._abandoned(row)
            if reason is None:
                continue
            done = self._drop(row) if row.endpoint in RESUMABLE else self._interrupt(row, reason) is not None
            ended += bool(done)
        return ended

    def settle_row(self, request_id: str, http_status: int, body: dict) -> Row:
        """The write that ends a claim, for the transaction of the call's audit row: the
        answer is stored when worth replaying; otherwise (the server was not ready or
        failed, so a retry should really try again) the claim is released."""
        if http_status >= 500:
            return _RELEASE, {"b_rid": request_id}
        return _FINISH, {"b_rid": request_id, "b_status": http_status,
                         "b_response": dumps_text(body), "b_at": utcnow()}

    def settle(self, request_id: str, http_status: int, body: dict) -> None:
        self._writer.write(rows=[self.settle_row(request_id, http_status, body)])

    def release(self, request_id: str) -> None:
        """Forget a claim whose handler crashed, so a retry runs it again."""
        self._writer.write(rows=[(_RELEASE, {"b_rid": request_id})])
