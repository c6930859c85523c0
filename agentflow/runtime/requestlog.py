"""Idempotent POSTs: a request with ``X-Request-ID`` runs once; retries get its answer.

The first arrival records the id as *pending* with its owner (host, pid); a retry that
finds the id done replays the stored answer, one that finds it pending waits for it —
unless the owner process has died (a killed worker), in which case the retry takes
the request over and runs it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time

from sqlalchemy import bindparam, delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db import utcnow
from ..db.models import RequestRecord
from .errors import MalformedRequest
from .writer import GroupCommitter, Row

log = logging.getLogger(__name__)

_TABLE = RequestRecord.__table__
_FINISH = update(_TABLE).where(_TABLE.c.request_id == bindparam("b_rid")).values(
    status="done", http_status=bindparam("b_status"), response=bindparam("b_response"),
    finished_at=bindparam("b_at"))
_RELEASE = delete(_TABLE).where(_TABLE.c.request_id == bindparam("b_rid"), _TABLE.c.status == "pending")

_HOST = socket.gethostname()


def _process_start(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return "0"


def owner_id() -> str:
    """``host:pid:start`` — start time guards against a reused pid."""
    pid = os.getpid()
    return f"{_HOST}:{pid}:{_process_start(pid)}"


def _owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it runs elsewhere."""
    try:
        host, pid, start = owner.rsplit(":", 2)
        pid_i = int(pid)
    except ValueError:
        return False
    if host != _HOST:
        return None
    try:
        os.kill(pid_i, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return _process_start(pid_i) == start


class Replay:
    """A stored answer to send again."""

    def __init__(self, http_status: int, body: dict):
        self.http_status = http_status
        self.body = body


class RequestLog:
    def __init__(self, read: sessionmaker[Session], writer: GroupCommitter, stale_after: float):
        self._read = read
        self._writer = writer
        self._stale_after = stale_after
        self._owner = owner_id()

    def begin(self, request_id: str, endpoint: str, wait_limit: float, body_sha256: str | None = None) -> Replay | None:
        """Claim ``request_id``; return the stored answer when it already ran.

        Raises:
            MalformedRequest: the id was used before for another endpoint or body.
        """
        deadline = time.monotonic() + wait_limit
        while True:
            try:
                # the claim is an INSERT batched with other requests' writes; only a
                # retry pays for the lookup
                self._writer.write(rows=[(_TABLE, {
                    "request_id": request_id, "endpoint": endpoint, "body_sha256": body_sha256,
                    "status": "pending", "owner": self._owner, "created_at": utcnow()})])
                return None
            except IntegrityError:
                pass
            with self._read() as s:
                row = s.get(RequestRecord, request_id)
            if row is None:  # released meanwhile: claim again
                continue
            if row.endpoint != endpoint or (row.body_sha256 and body_sha256 and row.body_sha256 != body_sha256):
                # a retry repeats its request exactly; anything else must not get its answer
                what = f"POST /{row.endpoint}" if row.endpoint != endpoint else "a request with another body"
                raise MalformedRequest(
                    f"X-Request-ID {request_id!r} was already used for {what}; send a new id for each "
                    "request and reuse it only to retry that same request")
            if row.status == "done":
                body = json.loads(row.response)
                body.setdefault("meta", {})["replayed"] = True
                return Replay(row.http_status or 200, body)
            alive = _owner_alive(row.owner)
            age = (utcnow() - row.created_at).total_seconds()
            if alive is False or (alive is None and age > self._stale_after) or time.monotonic() > deadline:
                if self._writer.write(lambda s: self._take_over(s, request_id, row.owner)):
                    log.warning("request %s: owner %s is gone, running it again", request_id, row.owner)
                    return None
                continue
            time.sleep(0.05)

    def _take_over(self, s: Session, request_id: str, old_owner: str) -> bool:
        res = s.execute(update(RequestRecord).where(
            RequestRecord.request_id == request_id, RequestRecord.owner == old_owner,
            RequestRecord.status == "pending").values(owner=self._owner, created_at=utcnow()))
        return res.rowcount == 1

    def settle_row(self, request_id: str, http_status: int, body: dict) -> Row:
        """The write that ends a claim, for the transaction of the call's audit row: the
        answer is stored when worth replaying; otherwise (the server was not ready or
        failed, so a retry should really try again) the claim is released."""
        if http_status >= 500:
            return _RELEASE, {"b_rid": request_id}
        return _FINISH, {"b_rid": request_id, "b_status": http_status,
                         "b_response": json.dumps(body, default=str), "b_at": utcnow()}

    def settle(self, request_id: str, http_status: int, body: dict) -> None:
        self._writer.write(rows=[self.settle_row(request_id, http_status, body)])

    def release(self, request_id: str) -> None:
        """Forget a claim whose handler crashed, so a retry runs it again."""
        self._writer.write(rows=[(_RELEASE, {"b_rid": request_id})])
