"""The model cost of rollout runs and tasks, from their stored token counts.

Every attempt is priced, retried ones included (they were paid for): the agent's calls
with the run's model, the judge's with the judge model named in the score details.
Prices come from the shipped table with the run's ``pricing`` config key over it (see
:mod:`agentflow.llm.pricing`). A cost with any call of an unpriced model is ``None``
(unknown), never 0.
"""
from __future__ import annotations

from typing import Iterable

from ..db.rollout import RolloutAttempt, RolloutRun
from ..llm.pricing import Pricing, load_pricing

__all__ = ["attempt_cost", "cost_summary", "judge_calls", "run_pricing", "scoring_judge_cost"]


def run_pricing(run: RolloutRun) -> Pricing:
    return load_pricing(((run.spec or {}).get("config") or {}).get("pricing"))


def judge_calls(details: dict | None) -> tuple[str, int, int, int] | None:
    """``(judge model, prompt, completion, cached prompt tokens)`` of the judge call behind
    a score, or ``None`` when the score needed no judge."""
    d = details or {}
    if not d.get("judge_model"):
        return None
    return (d["judge_model"], int(d.get("judge_prompt_tokens") or 0), int(d.get("judge_completion_tokens") or 0),
            int(d.get("judge_cached_prompt_tokens") or 0))


def _add(total: float | None, part: float | None) -> float | None:
    return None if total is None or part is None else total + part


def model_cost(pricing: Pricing, model: str, a: RolloutAttempt) -> float | None:
    calls = getattr(a, "model_calls", None) or 0
    if calls and (getattr(a, "cache_hits", None) or 0) == calls:
        return 0.0  # every call was answered by the model-call cache: nothing paid, whatever the price
    return pricing.cost(model, a.prompt_tokens, a.completion_tokens, a.cached_prompt_tokens or 0)


def judge_cost(pricing: Pricing, a: RolloutAttempt) -> float | None:
    call = judge_calls(a.score_details)
    if call is None or (a.score_details or {}).get("judge_cache_hit"):
        return 0.0  # no judge call (or the cache answered it), nothing paid
    model, prompt, completion, cached = call
    return pricing.cost(model, prompt, completion, cached)


def attempt_cost(pricing: Pricing, model: str, a: RolloutAttempt) -> float | None:
    """The agent's and the judge's cost of one attempt (``None``: unknown)."""
    return _add(model_cost(pricing, model, a), judge_cost(pricing, a))


def scoring_judge_cost(run: RolloutRun, scoring) -> float | None:
    """The cost of a rescoring's judge calls (``agentflow runs rescore --metric
    llm_judge``); 0 for a text metric, ``None`` when the judge has no price."""
    pricing = run_pricing(run)
    total: float | None = 0.0
    for row in scoring.scores:
        call = judge_calls(row.details)
        if call is not None and not (row.details or {}).get("judge_cache_hit"):
            model, prompt, completion, cached = call
            total = _add(total, pricing.cost(model, prompt, completion, cached))
    return None if total is None else round(total, 8)


def cost_summary(run: RolloutRun, attempts: Iterable[RolloutAttempt]) -> dict:
    """``cost_usd`` (``model_cost_usd`` + ``judge_cost_usd``) over ``attempts`` and the
    models without a price (``cost_unknown_models``)."""
    pricing = run_pricing(run)
    model, judge = 0.0, 0.0
    unknown: set[str] = set()
    for a in attempts:
        part = model_cost(pricing, run.model_name, a)
        if part is None:
            unknown.add(run.model_name)
        model = _add(model, part)
        part = judge_cost(pricing, a)
        if part is None:
            unknown.add(judge_calls(a.score_details)[0])
        judge = _add(judge, part)
    return {"cost_usd": None if model is None or judge is None else round(model + judge, 8),
            "model_cost_usd": None if model is None else round(model, 8),
            "judge_cost_usd": None if judge is None else round(judge, 8),
            "cost_unknown_models": sorted(unknown)}
