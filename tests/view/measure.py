"""How long the viewer's pages take: ``python -m tests.view.measure [FOLDER]``.

Builds the two databases of the tests — the real runs of ``scenario`` (``agentflow
demo`` on a scripted model, plus two rollouts and a synthesis) and the generated
10,000-task run of ``bigrun`` — starts ``agentflow view`` on each, and asks for every
kind of page several times. Prints, per page, the first (cold) request and the median and
slowest of the rest, as the server's own time (``Server-Timing``) and as seen by the
client. A third database is the 10,000-task one with its big run marked *running*, so
its summary is computed live rather than read from the stored one.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import bigrun, scenario
from .conftest import Viewer

REPEAT = 5


def _time(viewer: Viewer, path: str) -> tuple[float, float]:
    t0 = time.perf_counter()
    r = viewer.get(path)
    wall = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise SystemExit(f"{path}: HTTP {r.status_code}\n{r.text[:500]}")
    return float(r.headers["Server-Timing"].split("dur=")[1]), wall


def measure(viewer: Viewer, pages: dict[str, str], title: str) -> None:
    print(f"\n{title}\n{'page':<28} {'cold ms':>9} {'median ms':>10} {'max ms':>8}   (server / client)")
    for name, path in pages.items():
        cold = _time(viewer, path)
        rest = [_time(viewer, path) for _ in range(REPEAT)]
        med = (statistics.median(r[0] for r in rest), statistics.median(r[1] for r in rest))
        worst = (max(r[0] for r in rest), max(r[1] for r in rest))
        print(f"{name:<28} {cold[0]:>4.0f}/{cold[1]:<4.0f} {med[0]:>5.0f}/{med[1]:<4.0f} {worst[0]:>4.0f}/{worst[1]:<4.0f}")


def main(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    built = scenario.build(folder / "runs")
    print(f"real runs built in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    big_url = bigrun.build(folder / "big.db")
    print(f"10,000 tasks x 4 samples generated in {time.perf_counter() - t0:.1f} s "
          f"({(folder / 'big.db').stat().st_size / 1e6:.0f} MB)")

    with sqlite3.connect(f"file:{built.home / 'agentflow.db'}?mode=ro", uri=True) as db:
        attempt = db.execute("SELECT id FROM rollout_attempts WHERE run_id = ? ORDER BY id LIMIT 1",
                             (built.demo_rollout,)).fetchone()[0]
        audit = db.execute("SELECT min(id) FROM tool_calls").fetchone()[0]
    demo_pages = {
        "runs": "/runs", "demo rollout run": f"/rollout/{built.demo_rollout}",
        "demo trajectory": f"/rollout/{built.demo_rollout}/attempts/{attempt}",
        "demo synthesis run": f"/synthesis/{built.demo_synthesis}",
        "demo synthesis tree": f"/synthesis/{built.demo_synthesis}/seeds/0",
        "rollout run (2 samples)": f"/rollout/{built.rollout_a}",
        "task, samples side by side": f"/rollout/{built.rollout_a}/tasks/image",
        "compare": f"/compare?a={built.rollout_a}&b={built.rollout_b}&task=say-0",
        "synthesis tree": f"/synthesis/{built.synthesis}/seeds/0", "tools": "/tools",
        "audit row": f"/audit/{audit}", "sql (README query)": "/sql?q=SELECT+action,+count(*)+FROM+tool_calls+GROUP+BY+1",
    }
    big_pages = {
        "runs": "/runs", "run page": f"/rollout/{bigrun.BIG_A}",
        "run page, by score desc": f"/rollout/{bigrun.BIG_A}?sort=score&dir=desc",
        "run page, page 150": f"/rollout/{bigrun.BIG_A}?page=150",
        "run page, outcome filter": f"/rollout/{bigrun.BIG_A}?outcome=infra_error",
        "run page, search": f"/rollout/{bigrun.BIG_A}?q=task-0999",
        "task (4 samples)": f"/rollout/{bigrun.BIG_A}/tasks/task-04242",
        "compare 10,000 tasks": f"/compare?a={bigrun.BIG_A}&b={bigrun.BIG_B}",
        "tools of the run": f"/tools?run={bigrun.BIG_A}", "tools, all calls": "/tools",
        "progress poll": f"/api/progress?run={bigrun.BIG_A}",
    }
    for title, url, pages in (("demo database (agentflow demo + the tests' runs)", built.url, demo_pages),
                              ("10,000 tasks x 4 samples (finished: stored summary)", big_url, big_pages)):
        viewer = Viewer(url, folder / "view.log")
        try:
            measure(viewer, pages, title)
        finally:
            viewer.stop()

    live = folder / "big-running.db"
    shutil.copy(folder / "big.db", live)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with sqlite3.connect(live) as db:
        db.execute("UPDATE rollout_runs SET status = 'running', summary = NULL, finished_at = NULL, heartbeat_at = ?, "
                   "pid = ?, host = ? WHERE id = ?", (now, os.getpid(), socket.gethostname(), bigrun.BIG_A))
    viewer = Viewer(f"sqlite:///{live}", folder / "view.log")
    try:
        measure(viewer, {"runs (one running)": "/runs", "run page (live summary)": f"/rollout/{bigrun.BIG_A}",
                         "progress poll": f"/api/progress?run={bigrun.BIG_A}"},
                "10,000 tasks x 4 samples, still running (summary computed live)")
    finally:
        viewer.stop()


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="view-measure-"))
    main(target)
    if len(sys.argv) == 1:
        shutil.rmtree(target, ignore_errors=True)
