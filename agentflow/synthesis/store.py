"""Persistence of synthesis runs: database rows, the run report, and exported files.

Functions here take a SQLAlchemy ``Session`` and never commit; the runner commits each
node, each seed's paths and each QA candidate as they are made.
``synthesized_qa.jsonl``, ``trajectories.jsonl`` and ``report.json`` are always produced
from the database by :func:`export_run`, so the files and the database cannot disagree.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..runfiles import effective_status, write_lines
from ..db.base import isoformat, utcnow
from ..db.synthesis import (
    NODE_ACTION,
    QA_ACCEPTED,
    QA_REJECTED,
    SEED_DONE,
    SynthesisNode,
    SynthesisPath,
    SynthesisQA,
    SynthesisRun,
    SynthesisSeed,
)

__all__ = ["QA_FILE", "TRAJECTORIES_FILE", "REPORT_FILE", "export_run", "get_run", "node_rows", "report"]

QA_FILE = "synthesized_qa.jsonl"
TRAJECTORIES_FILE = "trajectories.jsonl"
REPORT_FILE = "report.json"

_NODE_FIELDS = ("id", "parent_id", "depth", "branch", "kind", "intent", "tool_name", "action", "params",
                "action_key", "observation", "code", "error", "trace_id", "request_id")


def get_run(session: Session, run_id: str) -> SynthesisRun | None:
    return session.get(SynthesisRun, run_id)


def node_rows(session: Session, seed_id: int) -> list[dict]:
    """A seed's stored nodes as dicts (to rebuild its tree on resume)."""
    rows = session.scalars(select(SynthesisNode).where(SynthesisNode.seed_id == seed_id).order_by(SynthesisNode.id))
    return [{k: getattr(n, k) for k in _NODE_FIELDS} for n in rows]


def add_node(session: Session, run_id: str, seed_id: int, rec: dict) -> SynthesisNode:
    row = SynthesisNode(run_id=run_id, seed_id=seed_id, **{k: v for k, v in rec.items()
                                                          if k in SynthesisNode.__table__.columns})
    session.add(row)
    return row


def report(session: Session, run: SynthesisRun) -> dict:
    """The run report: seeds by status, nodes by kind, paths, QA accepted and rejected by reason."""
    rid = run.id
    seeds = dict(session.execute(select(SynthesisSeed.status, func.count()).where(SynthesisSeed.run_id == rid)
                                 .group_by(SynthesisSeed.status)).all())
    nodes = dict(session.execute(select(SynthesisNode.kind, func.count()).where(SynthesisNode.run_id == rid)
                                 .group_by(SynthesisNode.kind)).all())
    failed_calls = session.scalar(select(func.count()).where(SynthesisNode.run_id == rid,
                                                             SynthesisNode.kind == NODE_ACTION,
                                                             SynthesisNode.code != 0)) or 0
    paths_total = session.scalar(select(func.count()).where(SynthesisPath.run_id == rid)) or 0
    paths_selected = session.scalar(select(func.count()).where(SynthesisPath.run_id == rid,
                                                               SynthesisPath.selected.is_(True))) or 0
    qa = dict(session.execute(select(SynthesisQA.status, func.count()).where(SynthesisQA.run_id == rid)
                              .group_by(SynthesisQA.status)).all())
    reasons = dict(session.execute(select(SynthesisQA.reason, func.count()).where(
        SynthesisQA.run_id == rid, SynthesisQA.status == QA_REJECTED).group_by(SynthesisQA.reason)).all())
    tokens = session.execute(select(func.coalesce(func.sum(SynthesisNode.prompt_tokens), 0),
                                    func.coalesce(func.sum(SynthesisNode.completion_tokens), 0))
                             .where(SynthesisNode.run_id == rid)).one()
    qa_tokens = session.execute(select(func.coalesce(func.sum(SynthesisQA.prompt_tokens), 0),
                                       func.coalesce(func.sum(SynthesisQA.completion_tokens), 0))
                                .where(SynthesisQA.run_id == rid)).one()
    expansions = sum(v for k, v in nodes.items() if k != "root")
    wall = (run.finished_at - run.created_at).total_seconds() if run.finished_at else None
    deepest = session.scalar(select(func.max(SynthesisNode.depth)).where(SynthesisNode.run_id == rid,
                                                                         SynthesisNode.kind == NODE_ACTION)) or 0
    seed_errors = dict(session.execute(select(SynthesisSeed.error, func.count()).where(
        SynthesisSeed.run_id == rid, SynthesisSeed.error.is_not(None)).group_by(SynthesisSeed.error)).all())
    config = (run.spec or {}).get("config") or {}
    out = {
        "run_id": rid,
        "status": effective_status(run),
        "error": run.error,
        "model_name": run.model_name,
        "seeds": {"total": run.total_seeds, "done": seeds.get(SEED_DONE, 0),
                  "by_status": dict(sorted(seeds.items()))},
        "nodes": {"total": sum(nodes.values()), "expansions": expansions, "actions": nodes.get(NODE_ACTION, 0),
                  "failed_tool_calls": failed_calls, "by_kind": dict(sorted(nodes.items()))},
        "paths": {"candidates": paths_total, "selected": paths_selected, "deepest": deepest,
                  "min_depth": config.get("min_depth"), "max_depth": config.get("max_depth")},
        "qa": {"accepted": qa.get(QA_ACCEPTED, 0), "rejected": qa.get(QA_REJECTED, 0),
               "rejected_by_reason": dict(sorted((k or "unknown", v) for k, v in reasons.items()))},
        "tokens": {"prompt": int(tokens[0]) + int(qa_tokens[0]), "completion": int(tokens[1]) + int(qa_tokens[1])},
        "started_at": isoformat(run.created_at),
        "finished_at": isoformat(run.finished_at),
        "wall_time_s": round(wall, 3) if wall is not None else None,
        "seed_errors": [{"message": m, "count": n} for m, n in sorted(seed_errors.items(), key=lambda kv: -kv[1])][:5],
    }
    out["cost"] = cost_report(session, run, out["qa"]["accepted"])
    out["explanation"] = explain(out)
    return out


def cost_report(session: Session, run: SynthesisRun, accepted: int) -> dict:
    """The model cost of the run, of each seed (by ``seed_index``) and per accepted QA
    pair, in dollars: the explorer's calls (tree nodes, the run's model) and the QA
    calls (each with its model). Synthesis does not record cached prompt tokens, so all
    prompt tokens are priced as uncached. A cost with any call of an unpriced model is
    ``None`` (unknown), never 0."""
    from ..llm.pricing import load_pricing

    pricing = load_pricing(((run.spec or {}).get("config") or {}).get("pricing"))
    rows = [(seed, run.model_name, p, c) for seed, p, c in session.execute(
        select(SynthesisSeed.seed_index, func.coalesce(func.sum(SynthesisNode.prompt_tokens), 0),
               func.coalesce(func.sum(SynthesisNode.completion_tokens), 0))
        .join(SynthesisSeed, SynthesisSeed.id == SynthesisNode.seed_id)
        .where(SynthesisNode.run_id == run.id).group_by(SynthesisSeed.seed_index))]
    rows += list(session.execute(
        select(SynthesisSeed.seed_index, SynthesisQA.model_name, func.coalesce(func.sum(SynthesisQA.prompt_tokens), 0),
               func.coalesce(func.sum(SynthesisQA.completion_tokens), 0))
        .join(SynthesisSeed, SynthesisSeed.id == SynthesisQA.seed_id)
        .where(SynthesisQA.run_id == run.id).group_by(SynthesisSeed.seed_index, SynthesisQA.model_name)))
    by_seed: dict[int, float | None] = {}
    unknown: set[str] = set()
    for seed, model, prompt, completion in rows:
        part = pricing.cost(model, int(prompt), int(completion))
        if part is None:
            unknown.add(model)
        so_far = by_seed.get(seed, 0.0)
        by_seed[seed] = None if so_far is None or part is None else so_far + part
    total: float | None = 0.0
    for value in by_seed.values():
        total = None if total is None or value is None else total + value
    return {"cost_usd": None if total is None else round(total, 8),
            "cost_per_accepted_qa_usd": round(total / accepted, 8) if total is not None and accepted else None,
            "by_seed": {str(k): (None if v is None else round(v, 8)) for k, v in sorted(by_seed.items())},
            "unknown_models": sorted(unknown)}


def explain(rep: dict) -> list[str]:
    """Why a run has no (or few) accepted QA: sentences for the report, empty when it has some."""
    seeds, nodes, paths, qa = rep["seeds"], rep["nodes"], rep["paths"], rep["qa"]
    if qa["accepted"]:
        return []
    why: list[str] = []
    if not seeds["total"]:
        return ["the run has no seeds"]
    if seeds["done"] < seeds["total"]:
        why.append(f"{seeds['total'] - seeds['done']} of {seeds['total']} seed(s) not finished "
                   f"({', '.join(f'{k} {v}' for k, v in seeds['by_status'].items() if k != SEED_DONE)})")
    for e in rep.get("seed_errors") or []:
        why.append(f"seed error × {e['count']}: {e['message'][:300]}")
    if not nodes["actions"]:
        why.append(f"no tool call was made ({nodes['expansions']} expansion(s): "
                   + ", ".join(f"{k} {v}" for k, v in nodes["by_kind"].items() if k != "root") + ")"
                   if nodes["expansions"] else "no tool call was made")
    elif nodes["failed_tool_calls"] == nodes["actions"]:
        why.append(f"all {nodes['actions']} tool call(s) failed")
    min_depth = paths.get("min_depth")
    if not paths["candidates"]:
        if min_depth is not None and paths["deepest"] < min_depth:
            why.append(f"no candidate path: the deepest path reached depth {paths['deepest']}, below "
                       f"min_depth {min_depth} (lower min_depth, or raise max_depth/branching_factor)")
        elif nodes["actions"]:
            why.append("no candidate path reached a leaf of min_depth or more")
    elif not paths["selected"]:
        why.append(f"{paths['candidates']} candidate path(s), none selected")
    elif qa["rejected"]:
        why.append(f"all {qa['rejected']} QA candidate(s) rejected: "
                   + ", ".join(f"{k} {v}" for k, v in qa["rejected_by_reason"].items()))
    elif not why:
        why.append(f"{paths['selected']} path(s) selected but no QA was written")
    return why


def _steps(nodes: dict[int, SynthesisNode], ids: list[int], kwargs: dict) -> list[dict]:
    out = []
    for i in ids:
        n = nodes[i]
        out.append({"node_id": n.id, "depth": n.depth, "intent": n.intent, "action": n.action,
                    "params": n.params, "observation": n.observation, "code": n.code,
                    "trace_id": n.trace_id, "request_id": n.request_id})
    return out


def export_run(session: Session, run_id: str, output_dir: str | Path | None = None,
               extra: dict | None = None) -> dict:
    """Write ``synthesized_qa.jsonl`` (accepted QA with provenance), ``trajectories.jsonl``
    (every selected path with its steps and QA outcome) and ``report.json`` from the
    database; returns the report (plus ``extra``) with the file paths.

    Raises:
        LookupError: no such run.
    """
    run = get_run(session, run_id)
    if run is None:
        raise LookupError(f"no synthesis run {run_id!r} in this database")
    rep = {**report(session, run), **(extra or {})}
    target = Path(output_dir or run.output_dir or ".")
    target.mkdir(parents=True, exist_ok=True)
    seeds = {s.id: s for s in session.scalars(select(SynthesisSeed).where(SynthesisSeed.run_id == run_id))}
    paths = list(session.scalars(select(SynthesisPath).where(SynthesisPath.run_id == run_id,
                                                             SynthesisPath.selected.is_(True))
                                 .order_by(SynthesisPath.seed_id, SynthesisPath.rank)))
    needed = {i for p in paths for i in p.node_ids}
    nodes = {n.id: n for n in session.scalars(select(SynthesisNode).where(SynthesisNode.id.in_(needed)))} \
        if needed else {}
    qas = list(session.scalars(select(SynthesisQA).where(SynthesisQA.run_id == run_id).order_by(SynthesisQA.id)))
    qa_by_path: dict[int, list[SynthesisQA]] = {}
    for q in qas:
        qa_by_path.setdefault(q.path_id, []).append(q)
    model = (run.spec or {}).get("config", {}).get("model_name") or run.model_name

    def seed_info(s: SynthesisSeed) -> dict:
        return {"index": s.seed_index, "content": s.content, "kwargs": s.kwargs}

    qa_lines, traj_lines = [], []
    for p in paths:
        seed = seeds[p.seed_id]
        steps = _steps(nodes, p.node_ids, seed.kwargs)
        path_info = {"id": p.id, "node_ids": p.node_ids, "depth": p.depth, "score": p.score, "rank": p.rank}
        tool_calls = [{"action": s["action"], "params": s["params"], "code": s["code"],
                       "request_id": s["request_id"]} for s in steps]
        for q in qa_by_path.get(p.id, []):
            if q.status != QA_ACCEPTED:
                continue
            qa_lines.append({"id": f"{run_id}-{q.id}", "question": q.question, "answer": q.answer,
                             "reasoning_steps": q.reasoning_steps, "run_id": run_id, "seed": seed_info(seed),
                             "path": path_info, "tool_calls": tool_calls, "model": q.model_name,
                             "trace_id": steps[0]["trace_id"] if steps else None,
                             "created_at": isoformat(q.created_at)})
        traj_lines.append({"run_id": run_id, "seed": seed_info(seed), "path": {
            **path_info, "depth_score": p.depth_score, "info_score": p.info_score,
            "diversity_score": p.diversity_score}, "steps": steps, "model": model,
            "qa": [{"id": f"{run_id}-{q.id}", "status": q.status, "reason": q.reason, "question": q.question,
                    "answer": q.answer} for q in qa_by_path.get(p.id, [])]})
    rep["qa_file"] = str(target / QA_FILE)
    rep["trajectories_file"] = str(target / TRAJECTORIES_FILE)
    rep["report_file"] = str(target / REPORT_FILE)
    write_lines(target / QA_FILE, (json.dumps(x, ensure_ascii=False, default=str) for x in qa_lines))
    write_lines(target / TRAJECTORIES_FILE, (json.dumps(x, ensure_ascii=False, default=str) for x in traj_lines))
    write_lines(target / REPORT_FILE, [json.dumps(rep, indent=2, ensure_ascii=False, default=str)])
    return rep


def touch(row: Any, **fields: Any) -> None:
    for key, value in fields.items():
        setattr(row, key, value)
    if hasattr(row, "updated_at"):
        row.updated_at = utcnow()
