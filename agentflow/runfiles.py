"""What rollout and synthesis runs share: run fingerprints, finding data files,
writing output files so that a crash never leaves half of one, the per-run output
folder with its ``latest`` link, the heartbeat that tells a live run from one whose
process is gone, and the loop that claims a run's items so that several processes can
work on one run (:class:`ClaimLoop`)."""
from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
import os
import queue
import re
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import REPO_DIR

__all__ = ["FATAL_REPEAT", "ClaimLoop", "FatalStreak", "HEARTBEAT_INTERVAL_S", "HEARTBEAT_STALE_S", "Heartbeat",
           "claim_owner", "effective_status", "find_data_file", "fingerprint", "process_alive", "process_identity",
           "process_tag", "run_beat", "run_output_dir", "update_latest", "worker_name", "write_lines"]

log = logging.getLogger(__name__)

FATAL_REPEAT = 3
"""Identical fatal model errors in a row (wrong key, unknown model, 400) that stop a run."""


class FatalStreak:
    """Counts identical fatal model errors in a row; the run stops at :data:`FATAL_REPEAT`.
    ``what`` names the unit that failed ("requests", "seeds"). Thread-safe, with a lock
    of its own: every finished task reports here, and under the runner's database lock
    it waited behind other tasks' transactions."""

    def __init__(self, what: str):
        self.what = what
        self._last, self._count = "", 0
        self._lock = threading.Lock()
        self.message: str | None = None
        """Why the run stopped early, once it did."""

    def reset(self) -> None:
        with self._lock:
            self._last, self._count = "", 0

    def failed(self, signature: str, short: str, resume: str) -> bool:
        """Record one fatal failure (``resume``: the command that continues the run);
        True when this one stops the run."""
        with self._lock:
            self._count = self._count + 1 if self._last == signature else 1
            self._last = signature
            if self._count < FATAL_REPEAT or self.message:
                return False
            self.message = (f"stopped early: {self._count} {self.what} in a row failed with the same fatal "
                            f"model error ({short}). Fix api_key or base_url, or serve the model (another "
                            f"model_name is a new run), then resume: {resume}")
            return True

HEARTBEAT_INTERVAL_S = 5.0
"""How often a running run writes ``heartbeat_at``."""
HEARTBEAT_STALE_S = 6 * HEARTBEAT_INTERVAL_S
"""A ``running`` run whose heartbeat is older than this is ``interrupted``."""
LATEST = "latest"
"""The link (or, where links cannot be made, the text file) in an output folder naming its newest run."""


def fingerprint(identity: dict) -> str:
    """sha256 of a run identity (canonical JSON), from a config or from a stored run."""
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def find_data_file(path: str, config_source: str | Path | None = None) -> Path:
    """Look a relative path up in the current directory, then beside the config file,
    then in the AgentFlow source tree (where the shipped seeds and benchmarks live).
    Returns the first candidate when none exists, for the caller's error message."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    candidates = [Path.cwd() / p]
    if config_source:
        candidates.append(Path(config_source).resolve().parent / p)
    candidates.append(REPO_DIR / p)
    for cand in candidates:
        if cand.exists():
            return cand
    return candidates[0]


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write lines to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
    tmp.replace(path)


def run_output_dir(base: str | Path, run_id: str) -> Path:
    """The folder of one run: ``<base>/<run_id>``."""
    return Path(base) / run_id


def update_latest(base: str | Path, run_id: str) -> Path:
    """Point ``<base>/latest`` at ``<base>/<run_id>``, atomically (a new link renamed over
    the old one, so a reader never finds it missing). Where symbolic links cannot be made,
    ``latest`` is a text file holding the run id."""
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    target = base / LATEST
    tmp = base / f".{LATEST}.{os.getpid()}.{threading.get_ident()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        try:
            os.symlink(run_id, tmp, target_is_directory=True)
        except (OSError, NotImplementedError):
            tmp.write_text(run_id + "\n", encoding="utf-8")
        if target.is_dir() and not target.is_symlink():
            log.warning("%s is a folder, not a link; not replacing it", target)
            tmp.unlink()
            return target
        os.replace(tmp, target)
    except OSError as err:
        log.warning("cannot update %s: %s", target, err)
    return target


def process_alive(pid: int | None, host: str | None) -> bool | None:
    """Whether process ``pid`` runs on ``host``: ``None`` when unknown (another host, no pid)."""
    if not pid or not host or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def effective_status(run, now: dt.datetime | None = None) -> str:
    """The status to show for a run row (rollout or synthesis): its stored ``status``,
    except that a ``running`` run whose process is dead (same host) or whose heartbeat is
    older than :data:`HEARTBEAT_STALE_S` is ``interrupted``."""
    if run.status != "running":
        return run.status
    alive = process_alive(getattr(run, "pid", None), getattr(run, "host", None))
    if alive is False:
        return "interrupted"
    beat = getattr(run, "heartbeat_at", None) or run.updated_at
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    if beat is not None and (now - beat).total_seconds() > HEARTBEAT_STALE_S and alive is not True:
        return "interrupted"
    return run.status


class Heartbeat:
    """A daemon thread calling ``beat()`` every ``interval`` seconds until stopped.
    ``beat`` writes ``heartbeat_at`` (its errors are logged, never raised)."""

    def __init__(self, beat: Callable[[], None], interval: float = HEARTBEAT_INTERVAL_S):
        self._beat, self.interval = beat, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception as err:  # boundary: a failed beat must not end the run
                log.debug("heartbeat failed: %s", err)


def run_beat(sessions: Callable, lock: threading.Lock, load_run: Callable) -> Callable[[], None]:
    """The ``beat`` of a run's :class:`Heartbeat`: set ``heartbeat_at`` of the row
    ``load_run(db_session)`` returns, under the runner's write lock. The beat also writes
    this process's ``pid`` and ``host``: when several processes work on one run, the row
    names one that is alive (a killed one's pid is replaced within one interval), so the
    run is not shown as ``interrupted`` while others still work on it."""
    from .db import utcnow

    def beat() -> None:
        with lock, sessions() as s:
            run = load_run(s)
            if run is not None:
                run.heartbeat_at = utcnow()
                run.pid, run.host = os.getpid(), socket.gethostname()
                s.commit()

    return beat


def reopen_run(session: Any, run_model: Any, run_id: str) -> None:
    """In a transaction that has just claimed items: a run another process ended while
    this one was about to claim (it saw no live claims) is ``running`` again, and this
    process ends it later with the full counts. ``run_model`` is the run's mapped class
    (``RolloutRun``, ``SynthesisRun``: both have these columns)."""
    from .db import utcnow

    session.execute(_reopen_statement(run_model), {"p_run_id": run_id, "p_now": utcnow()})


@functools.cache
def _reopen_statement(run_model: Any) -> Any:
    """Built once per run table: it runs with every claim."""
    from sqlalchemy import bindparam, update

    from .db.rollout import RUN_RUNNING  # the same word in every run table

    table = run_model.__table__
    return (update(table).where(table.c.id == bindparam("p_run_id"), table.c.status != RUN_RUNNING)
            .values(status=RUN_RUNNING, finished_at=None, error=None, updated_at=bindparam("p_now")))


def process_identity() -> dict:
    """``pid`` and ``host`` of this process, for a run row."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


def process_tag() -> str:
    """A random tag for one execution of a run (one process, or one runner inside it):
    it makes sandbox worker ids and claim owners unique per process."""
    return uuid.uuid4().hex[:8]


def claim_owner(tag: str) -> str:
    """The owner recorded on work claims: ``<tag>@<node:pid:start>`` (see
    :mod:`agentflow.processes`), so a resume can tell a dead owner of this machine."""
    from .processes import owner_id

    return f"{tag}@{owner_id()}"


_END = object()
"""Tells a :class:`ClaimLoop` slot to end."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_RUN_PART = 80


def worker_name(prefix: str, run_id: str, tag: str, slot: str) -> str:
    """A sandbox ``worker_id`` ``<prefix>-<run>-<tag>-<slot>`` within the server's name
    rules (``agentflow.runtime.sessions.NAME_PATTERN``, at most 128 characters). A run id
    with other characters, or longer than 80, is cleaned and cut, with a hash of the whole
    id so that two such runs never share a name."""
    part = _UNSAFE.sub("_", run_id)
    if part != run_id or len(part) > _RUN_PART:
        digest = hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:8]
        part = f"{part[:_RUN_PART - 9]}.{digest}"
    return f"{prefix}-{part}-{tag}-{slot}"


class ClaimLoop:
    """Claims the items of one run in small batches (a few ahead of the free slots) and
    runs them on ``workers`` slot threads, until nothing is left to claim and no other
    process holds a live claim (it waits for those: if their owner dies, their leases
    expire and this loop takes them over).

    ``handle(claim)`` runs in a slot thread and stores the item's result, ending its
    claim in the same transaction (:func:`agentflow.db.claims.fence`); it returns
    ``None`` when it did not end it (the run is stopping, the claim was lost), and the
    claim is then given back. ``on_result(value)`` sees every other return value in the
    calling thread (progress bars). ``want_more()`` says whether to claim more (a
    synthesis stops at ``target_qa_count``). ``on_claim(session)`` runs in each
    transaction that claimed something (a runner reopens a run another process ended).
    Setting ``stop`` ends the loop as soon as the items in flight return.
    """

    def __init__(self, sessions: Callable, lock: threading.Lock, kind: str, run_id: str, owner: str, *,
                 lease_s: float, workers: int, stop: threading.Event,
                 on_claim: Callable[[Any], None] | None = None):
        self.sessions, self.lock, self.kind, self.run_id, self.owner = sessions, lock, kind, run_id, owner
        self.lease_s, self.workers, self.stop, self.on_claim = lease_s, workers, stop, on_claim
        # how often an idle loop looks for work: a fraction of the lease, so an expired
        # claim is taken over soon after it expires, but never a busy loop
        self.poll = min(1.0, max(0.1, lease_s / 4))
        # items claimed ahead of the slots: half as many (at least one), so a claim never
        # stands between two tasks; refilled when less than half of them is left, so one
        # claim transaction serves several tasks, and a process holds few unstarted items
        # that another one might have run
        self.prefetch = max(1, workers // 2)

    # -------------------------------------------------------------- database steps

    def claim(self, limit: int) -> list:
        from .db import claims

        with self.lock, self.sessions() as s:
            rows = claims.claim(s, self.kind, self.run_id, self.owner, limit, self.lease_s)
            if rows and self.on_claim is not None:
                self.on_claim(s)
            s.commit()
            return rows

    def outstanding(self):
        from .db import claims

        with self.lock, self.sessions() as s:
            left = claims.outstanding(s, self.kind, self.run_id, self.owner)
            s.commit()
            return left

    def release(self, ids: list[int] | None = None) -> int:
        """Give back this owner's claims (all, or ``ids``) so others take them at once."""
        from .db import claims

        with self.lock, self.sessions() as s:
            count = claims.release(s, self.kind, self.run_id, self.owner, ids)
            s.commit()
            return count

    def renew_beat(self) -> Callable[[], None]:
        """The ``beat`` of the lease :class:`Heartbeat` (every third of a lease)."""
        from .db import claims

        def beat() -> None:
            with self.lock, self.sessions() as s:
                claims.renew(s, self.kind, self.run_id, self.owner, self.lease_s)
                s.commit()

        return beat

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(self.renew_beat(), interval=self.lease_s / 3)

    # -------------------------------------------------------------- the loop

    def run(self, handle: Callable[[Any], Any], on_result: Callable[[Any], None],
            want_more: Callable[[], bool] = lambda: True) -> None:
        # Slots take claimed items from ``todo`` themselves: a slot that finishes starts the
        # next item at once, and this thread tops ``todo`` up (a few items ahead of the
        # slots) while they work, so no claim stands between two tasks.
        todo: queue.Queue = queue.Queue()
        done: queue.Queue = queue.Queue()
        slots = [threading.Thread(target=self._slot, args=(handle, todo, done), daemon=True,
                                  name=f"{self.kind}-slot-{i}") for i in range(self.workers)]
        for t in slots:
            t.start()
        busy = 0  # items handed to the slots and not reported back yet
        dry_until = 0.0  # a claim found less than it asked for: nothing more until then
        try:
            while True:
                wanted = self.workers + self.prefetch - busy
                if wanted > self.prefetch // 2 and time.monotonic() >= dry_until and not self.stop.is_set() \
                        and want_more():
                    claimed = self.claim(wanted)
                    if len(claimed) < wanted:  # more comes only from expiring or released claims
                        dry_until = time.monotonic() + self.poll
                    for row in claimed:
                        todo.put(row)
                        busy += 1
                if not busy:
                    if self.stop.is_set() or self._finished(want_more):
                        return
                    self.stop.wait(self.poll)  # others hold live claims: take them over if they expire
                    continue
                try:
                    row, value, error = done.get(timeout=self.poll)
                except queue.Empty:
                    continue
                busy -= 1
                if error is not None:
                    raise error
                if value is None:
                    self.release([row.id])
                else:
                    on_result(value)
        except BaseException:
            self.stop.set()  # items in flight see it and give up; their claims are given back below
            raise
        finally:
            for _ in slots:
                todo.put(_END)
            for t in slots:
                t.join()
            self.release()  # in flight when stopping, or claimed and never started

    def _slot(self, handle: Callable[[Any], Any], todo: queue.Queue, done: queue.Queue) -> None:
        while True:
            row = todo.get()
            if row is _END:
                return
            if self.stop.is_set():  # claimed but not started: given back
                done.put((row, None, None))
                continue
            try:
                done.put((row, handle(row), None))
            except BaseException as err:  # handed to the loop's thread, which stops the run
                done.put((row, None, err))

    def _finished(self, want_more: Callable[[], bool]) -> bool:
        left = self.outstanding()
        if left.live_others:
            return False
        return left.claimable == 0 or not want_more()


def open_shared_run(sessions: Callable[[], Any], open_run: Callable[[Any], object], run_id: str,
                    tries: int = 3) -> None:
    """Run ``open_run(session)`` in its own transaction and commit. Two processes creating
    one new run at once: the second one's insert fails on the run's key, and it joins
    the run on the retry."""
    from sqlalchemy.exc import IntegrityError

    for attempt in range(tries):
        try:
            with sessions() as s:
                open_run(s)
                s.commit()
            return
        except IntegrityError:
            if attempt == tries - 1:
                raise
            log.debug("run %s was created by another process at the same time; joining it", run_id)
