"""Work claims: how several processes share the items of one rollout or synthesis run.

Every item of a run (a task sample of a rollout, a seed of a synthesis) has one
``work_claims`` row, seeded when a process opens the run (missing rows are inserted,
existing ones left alone, so processes opening the run at once do not conflict). A
process *claims* a few ``pending`` items (or ``claimed`` ones whose lease has expired:
their owner died) with ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
RETURNING`` (one for the expired ones, one for the pending ones) on PostgreSQL, so
concurrent claimers take disjoint rows without waiting for each other; on sqlite the engine's
``BEGIN IMMEDIATE`` serialises the claim transactions instead (the ``FOR UPDATE`` clause
is not rendered there). The owner renews its leases while it works.

An item ends (``done``) in the same transaction that writes its result, and only while
the writer still owns it (:func:`fence`): a worker whose lease lapsed and was taken over
finds its claim gone and rolls its result back, so every item ends exactly once whichever
process dies, even between writing a result and marking it.

Times are the database's clock on PostgreSQL (``now()`` in UTC), so machines whose
clocks disagree still agree on when a lease expires; sqlite is single-machine and uses
this process's clock. Functions here take a SQLAlchemy ``Session`` and never commit.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from typing import Iterable, Optional, Sequence

from sqlalchemy import (DateTime, Index, Integer, Interval, String, UniqueConstraint, and_, bindparam, func, or_,
                        select, update)
from sqlalchemy.orm import Mapped, Session, mapped_column

from .base import Base, utcnow

__all__ = ["CLAIM_CLAIMED", "CLAIM_DONE", "CLAIM_PENDING", "ClaimLost", "Claimed", "KIND_ROLLOUT", "KIND_SYNTHESIS",
           "Item", "Outstanding", "UnsupportedDatabase", "WorkClaim", "claim", "count_items", "fence", "live_owners", "outstanding", "progress",
           "release",
           "release_dead", "renew", "reopen_items", "seed_items"]

KIND_ROLLOUT = "rollout"
KIND_SYNTHESIS = "synthesis"

CLAIM_PENDING = "pending"
"""Nobody works on the item."""
CLAIM_CLAIMED = "claimed"
"""``owner`` works on it until ``lease_expires_at`` (renewed while it lives)."""
CLAIM_DONE = "done"
"""The item ended: its result is stored (``owner`` is the process that wrote it)."""

_SEED_CHUNK = 500


class WorkClaim(Base):
    """One item of one run and who, if anyone, is working on it."""

    __tablename__ = "work_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    """``rollout`` or ``synthesis``: which table ``run_id`` names."""
    run_id: Mapped[str] = mapped_column(String(200))
    item: Mapped[str] = mapped_column(String(200))
    """The task id (rollout) or the seed index (synthesis)."""
    sample: Mapped[int] = mapped_column(Integer, default=0)
    """The sample index of a rollout task (0 for seeds)."""
    position: Mapped[int] = mapped_column(Integer, default=0)
    """Claim order: items are claimed in dataset order."""
    status: Mapped[str] = mapped_column(String(16), default=CLAIM_PENDING)
    """``pending``, ``claimed`` or ``done``."""
    owner: Mapped[Optional[str]] = mapped_column(String(255))
    """``<tag>@<node:pid:start>`` of the process holding (or that finished) the item."""
    lease_expires_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    claims: Mapped[int] = mapped_column(Integer, default=0)
    """How many times the item was claimed (more than 1 after a takeover or a resume)."""
    results: Mapped[int] = mapped_column(Integer, default=0)
    """How many results were stored for the item (a rollout task sample's newest attempt
    number): :func:`fence` counts them, so the attempt number costs no extra query."""
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    claimed_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)
    finished_at: Mapped[Optional[dt.datetime]] = mapped_column(DateTime)

    __table_args__ = (
        UniqueConstraint("kind", "run_id", "item", "sample", name="uq_work_claims_item"),
        Index("ix_work_claims_run_status", "kind", "run_id", "status", "position"),
    )

    def __repr__(self) -> str:
        return f"<WorkClaim {self.kind}:{self.run_id}/{self.item}#{self.sample} {self.status} {self.owner or ''}>"


class ClaimLost(Exception):
    """This process no longer owns the item: its lease lapsed and another process took
    the item over (or a resume released it). The result must not be stored."""


@dataclasses.dataclass(frozen=True)
class Item:
    """An item to seed: its key, its claim order and whether it has already ended."""

    item: str
    sample: int = 0
    position: int = 0
    done: bool = False
    results: int = 0
    """Results already stored (the newest attempt number of a rollout task sample)."""


@dataclasses.dataclass(frozen=True)
class Outstanding:
    """What is left of a run, seen by one owner."""

    pending: int
    """Nobody works on these."""
    expired: int
    """Claimed by an owner whose lease has run out: free to take over."""
    live_mine: int
    live_others: int
    """Claimed by other processes with a live lease."""

    @property
    def claimable(self) -> int:
        return self.pending + self.expired

    @property
    def left(self) -> int:
        return self.pending + self.expired + self.live_mine + self.live_others


def _now(session: Session):
    """Now for a statement: the database's ``now()`` in UTC on PostgreSQL (an SQL
    expression, so no extra round trip), this process's clock on sqlite."""
    if session.get_bind().dialect.name == "postgresql":
        return func.timezone("UTC", func.now())
    return utcnow()


def _of_run(kind: str, run_id: str):
    return and_(WorkClaim.kind == kind, WorkClaim.run_id == run_id)


def _expired(now: dt.datetime):
    return or_(WorkClaim.lease_expires_at < now, WorkClaim.lease_expires_at.is_(None))


class UnsupportedDatabase(Exception):
    """Work claims use an upsert only sqlite and PostgreSQL (AgentFlow's databases) speak."""


def _insert(session: Session):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise UnsupportedDatabase(f"sharing a run's work needs sqlite or PostgreSQL, not {name}")
    return insert(WorkClaim.__table__)


def seed_items(session: Session, kind: str, run_id: str, items: Iterable[Item]) -> None:
    """Insert the items that have no row yet (``done`` ones as done); existing rows are
    left as they are, so any number of processes may seed one run at once."""
    now = utcnow()
    rows = [{"kind": kind, "run_id": run_id, "item": i.item, "sample": i.sample, "position": i.position,
             "status": CLAIM_DONE if i.done else CLAIM_PENDING, "claims": 0, "results": i.results, "created_at": now,
             "finished_at": now if i.done else None} for i in items]
    if not rows:
        return
    # one statement run for every row (the driver's executemany), not a VALUES list of
    # 500 rows compiled anew per chunk, which cost 1.5 s at the start of a 10,000-task run
    stmt = _insert(session).on_conflict_do_nothing(index_elements=["kind", "run_id", "item", "sample"])
    session.execute(stmt, rows)


def reopen_items(session: Session, kind: str, run_id: str, keys: Iterable[tuple[str, int]]) -> int:
    """Make ended items ``pending`` again (a resume retries them); returns how many."""
    keys = list(keys)
    count = 0
    for start in range(0, len(keys), _SEED_CHUNK):
        chunk = keys[start:start + _SEED_CHUNK]
        match = or_(*(and_(WorkClaim.item == item, WorkClaim.sample == sample) for item, sample in chunk))
        count += session.execute(update(WorkClaim).where(_of_run(kind, run_id), WorkClaim.status == CLAIM_DONE, match)
                                 .values(status=CLAIM_PENDING, owner=None, lease_expires_at=None,
                                         finished_at=None)).rowcount
    return count


@dataclasses.dataclass(frozen=True)
class Claimed:
    """An item this process has just claimed."""

    id: int
    item: str
    sample: int


class _HotStatements:
    """The statements a working process runs for every few items (claim, fence, renew),
    built once per dialect with bound parameters.

    Built per call through the ORM, each cost 0.6–1.4 ms of CPU, more than the database
    spent on it: the expression objects were made anew and the ORM's bulk-update path
    ran for an UPDATE that needs none of it. These are Core statements on the table, so
    SQLAlchemy finds them in its compiled cache. The SQL is the same as before; "now" is
    the database's clock on PostgreSQL and a parameter from this process's clock on
    sqlite (see :func:`_now`)."""

    def __init__(self, dialect: str):
        c = WorkClaim.__table__.c
        if dialect == "postgresql":
            now = func.timezone("UTC", func.now())
            until = now + bindparam("p_lease", type_=Interval)
        else:
            now, until = bindparam("p_now", type_=DateTime), bindparam("p_until", type_=DateTime)
        self.database_clock = dialect == "postgresql"
        of_run = and_(c.kind == bindparam("p_kind"), c.run_id == bindparam("p_run_id"))
        expired = and_(c.status == CLAIM_CLAIMED, or_(c.lease_expires_at < now, c.lease_expires_at.is_(None)))

        def claim_where(condition):
            free = (select(c.id).where(of_run, condition)
                    .order_by(c.position, c.id)
                    .limit(bindparam("p_limit"))
                    .with_for_update(skip_locked=True))
            return (update(WorkClaim.__table__).where(c.id.in_(free.scalar_subquery()))
                    .values(status=CLAIM_CLAIMED, owner=bindparam("p_owner"), lease_expires_at=until,
                            claims=c.claims + 1, claimed_at=now)
                    .returning(c.id, c.item, c.sample, c.position))

        # Two statements, not one with ``pending OR expired``: with the OR no index
        # gives the claim order, and the database sorted every item of the run on every
        # claim (3 ms a claim at 20,000 items on sqlite). Each of these walks the
        # ``(kind, run_id, status, position)`` index: the pending items in order, and
        # the claimed ones (those in flight, a few).
        self.claim_expired = claim_where(expired)
        self.claim_pending = claim_where(c.status == CLAIM_PENDING)
        held = and_(c.id == bindparam("p_id"), c.owner == bindparam("p_owner"), c.status == CLAIM_CLAIMED)
        self.fence_done = (update(WorkClaim.__table__).where(held)
                           .values(results=c.results + 1, status=CLAIM_DONE, finished_at=now, lease_expires_at=None)
                           .returning(c.results))
        self.fence_renew = (update(WorkClaim.__table__).where(held)
                            .values(results=c.results + 1, lease_expires_at=until).returning(c.results))
        self.renew = (update(WorkClaim.__table__)
                      .where(of_run, c.owner == bindparam("p_owner"), c.status == CLAIM_CLAIMED)
                      .values(lease_expires_at=until))

    def clock(self, lease_s: float) -> dict:
        """The time parameters of one statement: none on PostgreSQL (its clock is used)."""
        if self.database_clock:
            return {"p_lease": dt.timedelta(seconds=lease_s)}
        now = utcnow()
        return {"p_now": now, "p_until": now + dt.timedelta(seconds=lease_s)}


_hot_statements = functools.cache(_HotStatements)


def _statements(session: Session) -> _HotStatements:
    return _hot_statements(session.get_bind().dialect.name)


def claim(session: Session, kind: str, run_id: str, owner: str, limit: int, lease_s: float) -> list[Claimed]:
    """Claim up to ``limit`` items — pending ones, or ones whose owner's lease expired —
    in claim order, for ``lease_s`` seconds, in the caller's transaction. Rows another
    transaction is claiming right now are skipped, not waited for."""
    if limit <= 0:
        return []
    stmts = _statements(session)
    params = {"p_kind": kind, "p_run_id": run_id, "p_owner": owner, "p_limit": limit, **stmts.clock(lease_s)}
    # expired claims first: they were claimed before any pending item, so they come
    # first in claim order too (the result is sorted by position all the same)
    rows = session.execute(stmts.claim_expired, params).all()
    if len(rows) < limit:
        rows += session.execute(stmts.claim_pending, {**params, "p_limit": limit - len(rows)}).all()
    return [Claimed(r.id, r.item, r.sample) for r in sorted(rows, key=lambda r: (r.position, r.id))]


def renew(session: Session, kind: str, run_id: str, owner: str, lease_s: float) -> int:
    """Extend the leases of every item ``owner`` holds; returns how many it still holds."""
    stmts = _statements(session)
    return session.execute(stmts.renew, {"p_kind": kind, "p_run_id": run_id, "p_owner": owner,
                                         **stmts.clock(lease_s)}).rowcount


def fence(session: Session, claim_id: int, owner: str, *, done: bool, lease_s: float) -> int:
    """Check, inside the transaction that stores an item's result, that ``owner`` still
    holds it, and lock it until that transaction ends. ``done`` ends the item; otherwise
    (a result that is retried at once) its lease is renewed. Returns the number of this
    result (1 for the item's first; a rollout attempt's number).

    Raises:
        ClaimLost: another process owns the item now; roll the transaction back.
    """
    stmts = _statements(session)
    number = session.execute(stmts.fence_done if done else stmts.fence_renew,
                             {"p_id": claim_id, "p_owner": owner, **stmts.clock(lease_s)}).scalar()
    if number is None:
        raise ClaimLost(f"work claim {claim_id} is no longer held by {owner}")
    return int(number)


def release(session: Session, kind: str, run_id: str, owner: str, ids: Sequence[int] | None = None) -> int:
    """Give back items ``owner`` holds (all of them, or ``ids``) so others can claim them
    at once; returns how many."""
    stmt = update(WorkClaim).where(_of_run(kind, run_id), WorkClaim.owner == owner, WorkClaim.status == CLAIM_CLAIMED)
    if ids is not None:
        if not ids:
            return 0
        stmt = stmt.where(WorkClaim.id.in_(list(ids)))
    return session.execute(stmt.values(status=CLAIM_PENDING, owner=None, lease_expires_at=None)).rowcount


def release_dead(session: Session, kind: str, run_id: str) -> int:
    """Give back the items of owners known to be dead (a process of this machine that is
    gone); owners elsewhere are judged by their lease alone. Returns how many."""
    from ..processes import owner_alive

    rows = session.execute(select(WorkClaim.id, WorkClaim.owner).where(_of_run(kind, run_id),
                                                                       WorkClaim.status == CLAIM_CLAIMED)).all()
    dead = [cid for cid, owner in rows if owner and owner_alive(owner.split("@", 1)[-1]) is False]
    if not dead:
        return 0
    return session.execute(update(WorkClaim).where(WorkClaim.id.in_(dead), WorkClaim.status == CLAIM_CLAIMED)
                           .values(status=CLAIM_PENDING, owner=None, lease_expires_at=None)).rowcount


def live_owners(session: Session, kind: str, run_id: str) -> set[str]:
    """Owners holding an unexpired claim who are not known to be dead: processes that
    may still be working on the run, wherever they are."""
    from ..processes import owner_alive

    now = _now(session)
    owners = session.scalars(select(WorkClaim.owner).distinct().where(
        _of_run(kind, run_id), WorkClaim.status == CLAIM_CLAIMED, WorkClaim.lease_expires_at >= now)).all()
    return {o for o in owners if o and owner_alive(o.split("@", 1)[-1]) is not False}


def outstanding(session: Session, kind: str, run_id: str, owner: str) -> Outstanding:
    """Count what is left of a run: pending, expired, and live claims (``owner``'s and others')."""
    now = _now(session)
    live = and_(WorkClaim.status == CLAIM_CLAIMED, WorkClaim.lease_expires_at >= now)
    row = session.execute(select(
        func.count().filter(WorkClaim.status == CLAIM_PENDING),
        func.count().filter(and_(WorkClaim.status == CLAIM_CLAIMED, _expired(now))),
        func.count().filter(and_(live, WorkClaim.owner == owner)),
        func.count().filter(and_(live, WorkClaim.owner != owner)),
    ).where(_of_run(kind, run_id))).one()
    return Outstanding(*(int(x or 0) for x in row))


def count_items(session: Session, kind: str, run_id: str) -> int:
    """How many claim rows a run has (0 for a run made before work claims existed)."""
    return int(session.scalar(select(func.count()).where(_of_run(kind, run_id))) or 0)


def progress(session: Session, kind: str, run_id: str) -> dict:
    """A run's claims by status, and the owners holding claims now (for ``runs show``)."""
    counts = dict(session.execute(select(WorkClaim.status, func.count()).where(_of_run(kind, run_id))
                                  .group_by(WorkClaim.status)).all())
    owners = sorted(o for (o,) in session.execute(select(WorkClaim.owner).distinct().where(
        _of_run(kind, run_id), WorkClaim.status == CLAIM_CLAIMED)).all() if o)
    return {"pending": counts.get(CLAIM_PENDING, 0), "claimed": counts.get(CLAIM_CLAIMED, 0),
            "done": counts.get(CLAIM_DONE, 0), "owners": owners}
