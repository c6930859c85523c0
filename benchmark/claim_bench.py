"""Work-claim throughput on PostgreSQL: how many task samples per second N worker
processes claim from one run with ``SELECT … FOR UPDATE SKIP LOCKED`` leases.

Seeds one run with ``--items`` claim rows, then starts ``--workers`` processes (each with
its own engine, as rollout processes on several machines would) that, until nothing is
left, claim ``--batch`` items in one transaction — and, in the second pass, end each
claimed item in its own transaction (:func:`agentflow.db.claims.fence`, as the runner
does when it stores a finished task). Prints items claimed per second (claim
transactions only) and items per second through the whole claim→done cycle, and checks
that every item was claimed (and ended) exactly once.

    python benchmark/claim_bench.py                      # a throwaway PostgreSQL (needs the dev extra)
    python benchmark/claim_bench.py --database-url postgresql+psycopg://u@host/db --workers 8 --batch 1 8
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sqlalchemy import func, select  # noqa: E402

from agentflow.db import claims, make_engine, make_session_factory, upgrade  # noqa: E402
from tests.support.postgres import postgres_or_exit  # noqa: E402


def worker(url: str, run_id: str, batch: int, finish: bool, start, out) -> None:
    """One claimer: claim (→ end each item, with ``finish``) until nothing is claimable."""
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    owner = f"bench{uuid.uuid4().hex[:6]}@{mp.current_process().pid}"
    claim_s, claimed, ended = 0.0, 0, 0
    start.wait()
    t0 = time.perf_counter()
    while True:
        c0 = time.perf_counter()
        with sessions() as s:
            rows = claims.claim(s, claims.KIND_ROLLOUT, run_id, owner, batch, lease_s=60)
            ids = [r.id for r in rows]
            s.commit()
        claim_s += time.perf_counter() - c0
        if not ids:
            break
        claimed += len(ids)
        for cid in ids if finish else ():
            with sessions() as s:
                claims.fence(s, cid, owner, done=True, lease_s=60)
                s.commit()
            ended += 1
    out.put({"claimed": claimed, "ended": ended, "claim_s": claim_s, "wall_s": time.perf_counter() - t0})
    engine.dispose()


def seed(url: str, items: int) -> str:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        claims.seed_items(s, claims.KIND_ROLLOUT, run_id, [claims.Item(f"t{i:06d}", 0, i) for i in range(items)])
        s.commit()
    engine.dispose()
    return run_id


def check(url: str, run_id: str, items: int, finish: bool) -> None:
    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        rows = s.execute(select(claims.WorkClaim.status, claims.WorkClaim.claims, func.count())
                         .where(claims.WorkClaim.run_id == run_id)
                         .group_by(claims.WorkClaim.status, claims.WorkClaim.claims)).all()
    engine.dispose()
    expected = "done" if finish else "claimed"
    assert [tuple(r) for r in rows] == [(expected, 1, items)], rows  # each item claimed once (and ended once)


def run_one(url: str, items: int, workers: int, batch: int, finish: bool) -> dict:
    run_id = seed(url, items)
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, run_id, batch, finish, start, out)) for _ in range(workers)]
    for p in procs:
        p.start()
    time.sleep(1.0)  # let every process import and connect before the clock starts
    t0 = time.perf_counter()
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    check(url, run_id, items, finish)
    return {"workers": workers, "batch": batch, "items": items, "wall_s": wall, "items_per_s": items / wall,
            "spread": [r["claimed"] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", help="a PostgreSQL URL (default: start a throwaway one)")
    ap.add_argument("--items", type=int, default=4000)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = ap.parse_args()
    with (contextlib.nullcontext(args.database_url) if args.database_url else postgres_or_exit()) as url:
        upgrade(url)
        print(f"{'workers':>7} {'batch':>5} {'items':>6} {'claimed/s':>10} {'claim→done/s':>13}  "
              f"items per worker (claim→done)")
        for workers in args.workers:
            for batch in args.batch:
                claim_only = run_one(url, args.items, workers, batch, finish=False)
                cycle = run_one(url, args.items, workers, batch, finish=True)
                print(f"{workers:>7} {batch:>5} {args.items:>6} {claim_only['items_per_s']:>10.0f} "
                      f"{cycle['items_per_s']:>13.0f}  {cycle['spread']}")


if __name__ == "__main__":
    main()
