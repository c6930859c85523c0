"""Work claims on sqlite and PostgreSQL: claim order, taking over an expired claim, the
fence that keeps a taken-over owner from storing, and renewing leases."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import update

from agentflow.db import claims, make_engine, make_session_factory
from agentflow.db.engine import upgrade



@pytest.fixture(params=["sqlite", "postgresql"])
def sessions(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'claims.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    engine = make_engine(url, immediate=True)
    factory = make_session_factory(engine)
    factory.run = f"r-claims-{uuid.uuid4().hex[:8]}"  # one PostgreSQL database serves every test
    with factory() as s:
        # seeded out of dataset order: claims follow ``position``, not insertion
        items = [claims.Item(f"t{p}", 0, position=p) for p in (3, 0, 4, 1, 2, 5)]
        claims.seed_items(s, claims.KIND_ROLLOUT, factory.run, items)
        s.commit()
    yield factory
    engine.dispose()


def _claim(sessions, owner: str, limit: int, lease_s: float = 60) -> list[str]:
    with sessions() as s:
        got = claims.claim(s, claims.KIND_ROLLOUT, sessions.run, owner, limit, lease_s)
        s.commit()
    return [c.item for c in got]


def _expire(sessions, item: str) -> None:
    with sessions() as s:
        s.execute(update(claims.WorkClaim).where(claims.WorkClaim.item == item, claims.WorkClaim.run_id == sessions.run)
                  .values(lease_expires_at=dt.datetime(2000, 1, 1)))
        s.commit()


def test_items_are_claimed_in_order_and_once(sessions):
    assert _claim(sessions, "a", 2) == ["t0", "t1"]
    assert _claim(sessions, "b", 3) == ["t2", "t3", "t4"]
    assert _claim(sessions, "a", 5) == ["t5"]
    assert _claim(sessions, "b", 5) == []


def test_an_expired_claim_is_taken_over_before_pending_items_and_its_owner_is_fenced_off(sessions):
    with sessions() as s:
        first = claims.claim(s, claims.KIND_ROLLOUT, sessions.run, "dead", 2, 60)
        s.commit()
    _expire(sessions, "t1")
    # t1 (expired) comes back first, then the pending ones in order
    assert _claim(sessions, "alive", 2) == ["t1", "t2"]
    lost = next(c for c in first if c.item == "t1")
    with sessions() as s, pytest.raises(claims.ClaimLost):
        claims.fence(s, lost.id, "dead", done=True, lease_s=60)
    with sessions() as s:  # the dead owner's other claim, still live, is still its own
        kept = next(c for c in first if c.item == "t0")
        assert claims.fence(s, kept.id, "dead", done=True, lease_s=60) == 1
        s.commit()
    with sessions() as s:
        left = claims.outstanding(s, claims.KIND_ROLLOUT, sessions.run, "alive")
    assert (left.pending, left.live_mine, left.live_others) == (3, 2, 0)


def test_fence_counts_results_and_a_retried_result_keeps_the_claim(sessions):
    with sessions() as s:
        [c] = claims.claim(s, claims.KIND_ROLLOUT, sessions.run, "a", 1, 60)
        s.commit()
    with sessions() as s:
        assert claims.fence(s, c.id, "a", done=False, lease_s=60) == 1  # retried: still held
        s.commit()
    with sessions() as s:
        assert claims.fence(s, c.id, "a", done=True, lease_s=60) == 2
        s.commit()
    with sessions() as s, pytest.raises(claims.ClaimLost):  # ended: nothing more is stored
        claims.fence(s, c.id, "a", done=True, lease_s=60)


def test_renew_extends_only_the_owners_live_claims(sessions):
    _claim(sessions, "a", 2)
    _claim(sessions, "b", 1)
    _expire(sessions, "t0")
    _expire(sessions, "t2")
    with sessions() as s:
        assert claims.renew(s, claims.KIND_ROLLOUT, sessions.run, "a", 60) == 2  # t0 again, and t1
        s.commit()
    # a's renewed claims are live again; b's lapsed one is free
    assert _claim(sessions, "c", 1) == ["t2"]


def test_seeding_again_adds_only_missing_items_and_leaves_the_others_as_they_are(sessions):
    assert _claim(sessions, "a", 2) == ["t0", "t1"]
    with sessions() as s:  # a second process opens the run with one more item
        items = [claims.Item(f"t{p}", 0, position=p) for p in range(7)]
        claims.seed_items(s, claims.KIND_ROLLOUT, sessions.run, items)
        claims.seed_items(s, claims.KIND_ROLLOUT, sessions.run, [])
        s.commit()
    with sessions() as s:
        assert claims.count_items(s, claims.KIND_ROLLOUT, sessions.run) == 7
        left = claims.outstanding(s, claims.KIND_ROLLOUT, sessions.run, "a")
    assert (left.pending, left.live_mine) == (5, 2)  # t0 and t1 are still a's
