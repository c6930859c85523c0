"""Scoring a run's stored predictions again, without the agent (``agentflow runs rescore``).

A rescoring reads the newest attempt of each task sample, scores its stored prediction
with the chosen metric and writes one :class:`~agentflow.db.rollout.RolloutScoring` row
with one :class:`~agentflow.db.rollout.RolloutAttemptScore` per attempt. Nothing is
overwritten: the attempts keep the scores the run gave them, and every earlier rescoring
stays, so a run can be compared under several metrics or judges. Only the judge of
``llm_judge`` is ever called; the agent's model is not.
"""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ..db.rollout import ATTEMPT_COMPLETED, RolloutAttempt, RolloutAttemptScore, RolloutScoring
from ..llm import ChatModel
from .config import METRIC_ALIASES
from .metrics import Score, score_prediction
from .store import get_run, latest_attempts

__all__ = ["JudgeRequired", "UnknownMetric", "UnknownRun", "UnknownScoring", "canonical_metric", "choose_scoring",
           "rescore_run"]


class UnknownRun(LookupError):
    """No rollout run with that id."""


class UnknownScoring(LookupError):
    """No rescoring with that id for the run."""


class UnknownMetric(ValueError):
    """A metric name that is not one of :data:`agentflow.rollout.config.METRIC_ALIASES`."""


class JudgeRequired(ValueError):
    """``llm_judge`` without a judge model."""


def canonical_metric(name: str) -> str:
    """The canonical metric for ``name`` or an alias (``em``, ``f1_score``, ``judge``)."""
    try:
        return METRIC_ALIASES[name.strip().lower()]
    except KeyError:
        known = ", ".join(sorted(set(METRIC_ALIASES.values())))
        raise UnknownMetric(f"unknown metric {name!r}; known: {known}") from None


def _answers(ground_truth) -> list[str]:
    # the same rule as Task.answers: a string, or a list of accepted answers
    if ground_truth is None:
        return []
    if isinstance(ground_truth, (list, tuple)):
        return [str(a) for a in ground_truth if a is not None]
    return [str(ground_truth)]


def score_attempt(metric: str, attempt: RolloutAttempt, judge: ChatModel | None) -> Score:
    """The attempt's score under ``metric``; an attempt without a final answer scores 0,
    as the runner scores it."""
    if attempt.status != ATTEMPT_COMPLETED:
        return Score(0.0, {"reason": f"no answer ({attempt.status})"})
    return score_prediction(metric, attempt.prediction, _answers(attempt.ground_truth), question=attempt.question,
                            judge=judge)


def rescore_run(session: Session, run_id: str, metric: str, *, judge: ChatModel | None = None) -> RolloutScoring:
    """Score the newest attempts of ``run_id`` with ``metric`` and add the scoring (not
    committed).

    Raises:
        UnknownRun: no such run.
        UnknownMetric: ``metric`` is not a known metric.
        JudgeRequired: ``llm_judge`` without ``judge``.
    """
    metric = canonical_metric(metric)
    if get_run(session, run_id) is None:
        raise UnknownRun(f"no rollout run {run_id!r} in this database")
    if metric == "llm_judge" and judge is None:
        raise JudgeRequired("llm_judge needs a judge model (--judge-model, or the run's evaluator_model_name)")
    scoring = RolloutScoring(run_id=run_id, metric=metric,
                             judge_model=judge.model if metric == "llm_judge" else None,
                             judge_base_url=judge.base_url if metric == "llm_judge" else None)
    for attempt in sorted(latest_attempts(session, run_id).values(), key=lambda a: a.id):
        score = score_attempt(metric, attempt, judge)
        scoring.scores.append(RolloutAttemptScore(attempt_id=attempt.id, score=score.value,
                                                  scored=score.value is not None, details=score.details))
    session.add(scoring)
    session.flush()
    return scoring


def choose_scoring(session: Session, run_id: str, scoring_id: int | None = None) -> RolloutScoring | None:
    """The rescoring ``scoring_id`` of the run, or its newest one; ``None`` when the run
    has none (it is shown with the scores it was run with).

    Raises:
        UnknownScoring: ``scoring_id`` is not a rescoring of this run.
    """
    query = (select(RolloutScoring).where(RolloutScoring.run_id == run_id)
             .options(selectinload(RolloutScoring.scores)))
    if scoring_id is not None:
        found = session.scalars(query.where(RolloutScoring.id == scoring_id)).first()
        if found is None:
            raise UnknownScoring(f"run {run_id!r} has no scoring {scoring_id}; see `agentflow runs show {run_id}`")
        return found
    # ids grow with each rescoring, so the largest is the newest (times may tie)
    return session.scalars(query.order_by(RolloutScoring.id.desc()).limit(1)).first()


def list_scorings(session: Session, run_id: str) -> list[RolloutScoring]:
    return list(session.scalars(select(RolloutScoring).where(RolloutScoring.run_id == run_id)
                                .order_by(RolloutScoring.id)))
