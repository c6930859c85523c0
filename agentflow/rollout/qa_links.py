"""Which tasks of a rollout are synthesized QA pairs, so their attempts are linked to them.

A benchmark written by ``agentflow runs export SYNTH_RUN --as-benchmark`` carries, on
each task line, ``"synthesis": {"run_id": SYNTH_RUN, "qa_id": N}``: the task is the QA
pair ``synthesis_qa.id = N`` of that run. The field is kept as task metadata (like any
unknown field). When the rollout starts (new run, resume or join), :func:`resolve`
checks every such field against the rollout's database; a task is linked only when the
QA pair is there, belongs to that synthesis run and has the same question (a file edited
by hand, or a rollout on another database, links nothing and says so in the log). Each
stored attempt of a linked task then gets its ``synthesis_qa_attempts`` row in the same
transaction (:func:`link`), so a resume links the attempts it adds and a crash never
leaves an attempt without its link.
"""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.synthesis import SynthesisQA, SynthesisQAAttempt
from .tasks import Task

__all__ = ["FIELD", "link", "resolve", "synthesis_ref"]

log = logging.getLogger(__name__)

FIELD = "synthesis"
"""The task field naming the QA pair: ``{"run_id": str, "qa_id": int}``."""


def synthesis_ref(metadata: dict | None) -> tuple[str, int] | None:
    """``(synthesis run id, qa id)`` from a task's metadata, or ``None`` when the task
    names no QA pair or names it in a malformed way (anything but a string and an int)."""
    ref = (metadata or {}).get(FIELD)
    if not isinstance(ref, dict):
        return None
    run_id, qa_id = ref.get("run_id"), ref.get("qa_id")
    if not isinstance(run_id, str) or not isinstance(qa_id, int) or isinstance(qa_id, bool):
        return None
    return run_id, qa_id


def resolve(session: Session, tasks: list[Task]) -> dict[str, int]:
    """``{task id: qa id}`` of the tasks whose ``synthesis`` field names a QA pair of this
    database with the same run and question. The others are logged (once, counted) and
    not linked; the rollout itself runs them as any task."""
    refs = {t.id: synthesis_ref(t.metadata) for t in tasks}
    named = [t for t in tasks if FIELD in t.metadata]
    if not named:
        return {}
    wanted = {r[1] for r in refs.values() if r is not None}
    rows: dict[int, tuple[str, str | None]] = {}
    ids = sorted(wanted)
    for i in range(0, len(ids), 500):
        for qa_id, run_id, question in session.execute(
                select(SynthesisQA.id, SynthesisQA.run_id, SynthesisQA.question)
                .where(SynthesisQA.id.in_(ids[i:i + 500]))):
            rows[qa_id] = (run_id, question)
    out: dict[str, int] = {}
    problems = {"malformed": 0, "missing": 0, "other question": 0}
    for t in named:
        ref = refs[t.id]
        if ref is None:
            problems["malformed"] += 1
            continue
        found = rows.get(ref[1])
        if found is None or found[0] != ref[0]:
            problems["missing"] += 1
        elif (found[1] or "").strip() != t.question.strip():
            problems["other question"] += 1
        else:
            out[t.id] = ref[1]
    if any(problems.values()):
        log.warning("%d of %d task(s) name a synthesized QA pair that is not linked (%s): their pass@k is not "
                    "written back. A task links when its 'synthesis' field is {\"run_id\": ..., \"qa_id\": ...} of "
                    "a QA pair in this database with the same question.", len(named) - len(out), len(named),
                    ", ".join(f"{k} {v}" for k, v in problems.items() if v))
    return out


def link(session: Session, qa_id: int, rollout_run_id: str, attempt_id: int, task_id: str) -> bool:
    """Add the link of a just-added attempt (not committed). A QA pair deleted since the
    rollout started (its synthesis run was removed) is not linked, and the attempt is
    stored all the same: returns False."""
    if session.get(SynthesisQA, qa_id) is None:
        log.warning("synthesized QA pair %s is no longer in the database; attempt %s of task %s is stored "
                    "without its link", qa_id, attempt_id, task_id)
        return False
    session.add(SynthesisQAAttempt(qa_id=qa_id, rollout_run_id=rollout_run_id, attempt_id=attempt_id))
    return True
