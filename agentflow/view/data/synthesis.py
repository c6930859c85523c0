"""Synthesis runs for the viewer: the report, the seeds, and per seed its exploration
tree laid out for drawing, its scored paths and its QA candidates."""
from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from ...db.synthesis import (
    NODE_ACTION,
    NODE_FAILED,
    NODE_ROOT,
    QA_ACCEPTED,
    QA_REJECTED,
    RUN_RUNNING,
    SynthesisNode,
    SynthesisPath,
    SynthesisQA,
    SynthesisRun,
    SynthesisSeed,
)
from ...runfiles import effective_status
from ...synthesis.benchmark import qa_difficulty
from ...synthesis.store import get_run, report
from ..errors import BadParameter, NotFound
from ..render import pretty_json, result_parts
from .tools import audit_rows

__all__ = ["NODE_H", "NODE_W", "load_run", "qa_page", "run_report", "seed_rows", "seed_view"]

NODE_W, NODE_H = 168, 46
"""Size of a node's box in the tree drawing (SVG user units)."""
_GAP_X, _GAP_Y = 18, 64
QA_PER_PAGE = 50
QA_STATUSES = (QA_ACCEPTED, QA_REJECTED)


def load_run(session: Session, run_id: str) -> SynthesisRun:
    """Raises: NotFound."""
    run = get_run(session, run_id)
    if run is None:
        raise NotFound(f"no synthesis run {run_id!r} in this database")
    return run


def run_report(session: Session, run: SynthesisRun) -> dict:
    """The stored report of a finished run, else a live one (:func:`agentflow.synthesis.store.report`)."""
    if run.status != RUN_RUNNING and run.report and "cost" in run.report:
        return {**run.report, "status": effective_status(run), "error": run.error}
    return report(session, run)


def seed_rows(session: Session, run: SynthesisRun) -> list[dict]:
    """Every seed of the run with its node, path and QA counts."""
    N, P, Q = SynthesisNode, SynthesisPath, SynthesisQA
    nodes = {r.seed_id: r for r in session.execute(
        select(N.seed_id, func.count().label("nodes"),
               func.sum(case((N.kind == NODE_ACTION, 1), else_=0)).label("actions"),
               func.sum(case((N.kind == NODE_FAILED, 1), else_=0)).label("failed"),
               func.sum(case((N.code.is_not(None) & (N.code != 0), 1), else_=0)).label("errors"))
        .where(N.run_id == run.id).group_by(N.seed_id))}
    paths = dict(session.execute(select(P.seed_id, func.count()).where(P.run_id == run.id, P.selected.is_(True))
                                 .group_by(P.seed_id)).all())
    qa = {}
    for seed_id, status, n in session.execute(select(Q.seed_id, Q.status, func.count()).where(Q.run_id == run.id)
                                              .group_by(Q.seed_id, Q.status)):
        qa.setdefault(seed_id, {})[status] = n
    out = []
    for s in session.scalars(select(SynthesisSeed).where(SynthesisSeed.run_id == run.id)
                             .order_by(SynthesisSeed.seed_index)):
        n = nodes.get(s.id)
        out.append({"seed": s, "nodes": n.nodes if n else 0, "actions": (n.actions or 0) if n else 0,
                    "failed": (n.failed or 0) if n else 0, "errors": (n.errors or 0) if n else 0,
                    "selected": paths.get(s.id, 0), "accepted": qa.get(s.id, {}).get(QA_ACCEPTED, 0),
                    "rejected": qa.get(s.id, {}).get(QA_REJECTED, 0)})
    return out


def qa_page(session: Session, run: SynthesisRun, *, status: str = "", page: int = 1) -> dict:
    """One page of the run's QA candidates, newest last, each with its difficulty (how
    each rollout that ran it as a benchmark did: see :func:`qa_difficulty`).

    Raises:
        BadParameter: unknown status, or a page past the last.
    """
    if status and status not in QA_STATUSES:
        raise BadParameter(f"unknown QA status {status!r}; one of: {', '.join(QA_STATUSES)}")
    where = [SynthesisQA.run_id == run.id] + ([SynthesisQA.status == status] if status else [])
    total = session.scalar(select(func.count()).select_from(SynthesisQA).where(*where)) or 0
    pages = max(1, -(-total // QA_PER_PAGE))
    if page > pages:
        raise BadParameter(f"page {page} is past the last page ({pages})")
    rows = session.execute(select(SynthesisQA, SynthesisSeed.seed_index).join(
        SynthesisSeed, SynthesisSeed.id == SynthesisQA.seed_id).where(*where).order_by(SynthesisQA.id)
        .limit(QA_PER_PAGE).offset((page - 1) * QA_PER_PAGE)).all()
    difficulty = qa_difficulty(session, run.id, [q.id for q, _ in rows])
    return {"rows": [{"qa": q, "seed_index": i, "difficulty": difficulty.get(q.id, [])} for q, i in rows],
            "total": total, "page": page, "pages": pages, "status": status}


@dataclasses.dataclass
class DrawnNode:
    node: SynthesisNode
    x: float
    y: float
    label: str
    detail: str
    classes: str


def _label(n: SynthesisNode) -> tuple[str, str]:
    if n.kind == NODE_ROOT:
        return "seed", ""
    if n.kind != NODE_ACTION:
        return n.kind, (n.intent or "")[:26]
    params = n.params or {}
    first = next((v for v in params.values() if isinstance(v, (str, int, float))), "")
    return (n.action or n.tool_name or "?")[:24], str(first)[:26]


def _layout(nodes: list[SynthesisNode]) -> dict[int, tuple[float, float]]:
    """x, y of each node's box: leaves side by side in depth-first order, a parent
    centred over its children, one row per depth."""
    children: dict[int | None, list[SynthesisNode]] = {}
    for n in nodes:
        children.setdefault(n.parent_id, []).append(n)
    for kids in children.values():
        kids.sort(key=lambda n: (n.branch, n.id))
    ids = {n.id for n in nodes}
    roots = [n for n in nodes if n.parent_id is None or n.parent_id not in ids]
    pos: dict[int, tuple[float, float]] = {}
    next_leaf = [0]

    def place(n: SynthesisNode) -> float:
        kids = children.get(n.id, [])
        if not kids:
            x = next_leaf[0] * (NODE_W + _GAP_X)
            next_leaf[0] += 1
        else:
            xs = [place(k) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        pos[n.id] = (x, n.depth * (NODE_H + _GAP_Y))
        return x

    for r in sorted(roots, key=lambda n: n.id):
        place(r)
    return pos


def load_seed(session: Session, run: SynthesisRun, seed_index: int) -> SynthesisSeed:
    seed = session.scalars(select(SynthesisSeed).where(SynthesisSeed.run_id == run.id,
                                                       SynthesisSeed.seed_index == seed_index)).first()
    if seed is None:
        raise NotFound(f"synthesis run {run.id!r} has no seed {seed_index}")
    return seed


def seed_view(session: Session, run: SynthesisRun, seed: SynthesisSeed, focus_path: int | None = None) -> dict:
    """A seed's tree (nodes placed for drawing, edges, which lie on selected paths), its
    candidate paths and QA candidates with their checks.

    Raises:
        BadParameter: ``focus_path`` is not a path of this seed.
    """
    nodes = list(session.scalars(select(SynthesisNode).where(SynthesisNode.seed_id == seed.id)
                                 .order_by(SynthesisNode.id)))
    paths = list(session.scalars(select(SynthesisPath).where(SynthesisPath.seed_id == seed.id)
                                 .order_by(SynthesisPath.selected.desc(), SynthesisPath.rank, SynthesisPath.id)))
    qas = list(session.scalars(select(SynthesisQA).where(SynthesisQA.seed_id == seed.id).order_by(SynthesisQA.id)))
    by_path = {p.id: p for p in paths}
    if focus_path is not None and focus_path not in by_path:
        raise BadParameter(f"seed {seed.seed_index} of run {run.id!r} has no path {focus_path}")
    root_ids = {n.id for n in nodes if n.kind == NODE_ROOT}
    selected = set(root_ids)
    for p in paths:
        if p.selected:
            selected.update(p.node_ids)
    focus = set(root_ids) | set(by_path[focus_path].node_ids) if focus_path is not None else set()
    qa_by_path: dict[int, list[SynthesisQA]] = {}
    for q in qas:
        qa_by_path.setdefault(q.path_id, []).append(q)
    audit = audit_rows(session, [n.request_id for n in nodes if n.request_id])
    pos = _layout(nodes)
    drawn, edges, cards = [], [], []
    by_id = {n.id: n for n in nodes}
    for n in nodes:
        x, y = pos.get(n.id, (0.0, 0.0))
        label, detail = _label(n)
        classes = [f"k-{n.kind}"]
        if n.code not in (None, 0):
            classes.append("err")
        if n.refused:
            classes.append("refused")
        if any(r.get("reason") == "duplicate" for r in n.refused or []):
            classes.append("dup")
        if n.id in selected:
            classes.append("sel")
        if n.id in focus:
            classes.append("focus")
        drawn.append(DrawnNode(n, x, y, label, detail, " ".join(classes)))
        parent = by_id.get(n.parent_id) if n.parent_id is not None else None
        if parent is not None:
            px, py = pos.get(parent.id, (0.0, 0.0))
            on_sel = n.id in selected and parent.id in selected
            edges.append({"x1": px + NODE_W / 2, "y1": py + NODE_H, "x2": x + NODE_W / 2, "y2": y,
                          "classes": " ".join(c for c, on in (("sel", on_sel),
                                                              ("focus", n.id in focus and parent.id in focus)) if on)})
        parts, images = result_parts(n.observation)
        cards.append({"node": n, "parts": parts, "images": images, "params": pretty_json(n.params) if n.params else None,
                      "audit": audit.get(n.request_id or "", []), "refused": [{**r, "arguments": pretty_json(r["arguments"]) if r.get("arguments") else None}
                                  for r in n.refused or []], "selected": n.id in selected})
    width = max((x for x, _ in pos.values()), default=0) + NODE_W + 2
    height = max((y for _, y in pos.values()), default=0) + NODE_H + 2
    qa_views = [{"qa": q, "path": by_path.get(q.path_id),
                 "checks": [{"name": k, "ok": v.get("ok", True),
                             "detail": ", ".join(f"{dk}={dv}" for dk, dv in v.items() if dk != "ok")}
                            for k, v in (q.checks or {}).items()]} for q in qas]
    return {"seed": seed, "nodes": drawn, "edges": edges, "cards": cards, "width": width, "height": height,
            "paths": [{"path": p, "qa": qa_by_path.get(p.id, [])} for p in paths], "qa": qa_views,
            "focus_path": focus_path, "node_w": NODE_W, "node_h": NODE_H}


def node_for_request(session: Session, request_id: str) -> list[Any]:
    """The synthesis nodes (with run and seed index) that made this request."""
    return list(session.execute(select(SynthesisNode.id, SynthesisNode.run_id, SynthesisSeed.seed_index)
                                .join(SynthesisSeed, SynthesisSeed.id == SynthesisNode.seed_id)
                                .where(SynthesisNode.request_id == request_id)))
