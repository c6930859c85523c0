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
from typing import Callable

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ..db import utcnow
from ..db.models import RequestRecord
from .errors import MalformedRequest
from .writer import GroupCommitter

log = logging.getLogger(__name__)

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
                found = self._writer.write(lambda s: self._claim(s, request_id, endpoint, body_sha256))
            except IntegrityError:  # another server inserted it first (PostgreSQL race)
                continue
            if found is None:
                return None
            status, owner, http_status, response, age, used_by, used_body = found
            if used_by != endpoint or (used_body and body_sha256 and used_body != body_sha256):
                # a retry repeats its request exactly; anything else must not get its answer
                what = f"POST /{used_by}" if used_by != endpoint else "a request with another body"
                raise MalformedRequest(
                    f"X-Request-ID {request_id!r} was already used for {what}; send a new id for each "
                    "request and reuse it only to retry that same request")
            if status == "done":
                body = json.loads(response)
                body.setdefault("meta", {})["replayed"] = True
                return Replay(http_status or 200, body)
            alive = _owner_alive(owner)
            if alive is False or (alive is None and age > self._stale_after) or time.monotonic() > deadline:
                if self._writer.write(lambda s: self._take_over(s, request_id, owner)):
                    log.warning("request %s: owner %s is gone, running it again", request_id, owner)
                    return None
                continue
            time.sleep(0.05)

    def _claim(self, s: Session, request_id: str, endpoint: str, body_sha256: str | None):
        row = s.get(RequestRecord, request_id)
        if row is None:
            s.add(RequestRecord(request_id=request_id, endpoint=endpoint, body_sha256=body_sha256,
                                status="pending", owner=self._owner, created_at=utcnow()))
            s.flush()
            return None
        age = (utcnow() - row.created_at).total_seconds()
        return row.status, row.owner, row.http_status, row.response, age, row.endpoint, row.body_sha256

    def _take_over(self, s: Session, request_id: str, old_owner: str) -> bool:
        res = s.execute(update(RequestRecord).where(
            RequestRecord.request_id == request_id, RequestRecord.owner == old_owner,
            RequestRecord.status == "pending").values(owner=self._owner, created_at=utcnow()))
        return res.rowcount == 1

    def finish_fn(self, request_id: str, http_status: int, body: dict) -> Callable[[Session], None]:
        """A write that stores the answer (for the same transaction as the audit row)."""
        text = json.dumps(body, default=str)

        def finish(s: Session) -> None:
            s.execute(update(RequestRecord).where(RequestRecord.request_id == request_id).values(
                status="done", http_status=http_status, response=text, finished_at=utcnow()))

        return finish

    def finish(self, request_id: str, http_status: int, body: dict) -> None:
        self._writer.write(self.finish_fn(request_id, http_status, body))

    def release_fn(self, request_id: str) -> Callable[[Session], None]:
        """A write that forgets the claim, so a retry runs the request again."""
        def release(s: Session) -> None:
            s.execute(delete(RequestRecord).where(RequestRecord.request_id == request_id,
                                                  RequestRecord.status == "pending"))

        return release

    def release(self, request_id: str) -> None:
        self._writer.write(self.release_fn(request_id))

    def settle_fn(self, request_id: str, http_status: int, body: dict) -> Callable[[Session], None]:
        """Store an answer worth replaying; release the claim of one that is not (the
        server was not ready or failed: a retry should really try again)."""
        if http_status >= 500:
            return self.release_fn(request_id)
        return self.finish_fn(request_id, http_status, body)

    def settle(self, request_id: str, http_status: int, body: dict) -> None:
        self._writer.write(self.settle_fn(request_id, http_status, body))
