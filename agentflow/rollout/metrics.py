"""Scoring a prediction against accepted answers, and pass@k.

Text metrics normalise both sides as SQuAD does (lower case, punctuation and the
articles a/an/the removed, whitespace collapsed) and, when a task accepts several
answers, keep the best match. ``llm_judge`` asks a model; a verdict it cannot parse is
*unscored* (``score=None``), never counted as wrong.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import re
import string
from typing import Any, Callable

from ..llm import ChatModel, LLMError, Usage

__all__ = [
    "Score",
    "contains_answer",
    "exact_match",
    "f1",
    "llm_judge",
    "normalize_answer",
    "numeric_match",
    "pass_at_k",
    "score_prediction",
]

PASS_THRESHOLD = 0.5
"""A sample with a score at least this counts as solved for pass@k (binary metrics
score 0 or 1; for f1 it means most tokens match)."""


@dataclasses.dataclass
class Score:
    """The outcome of scoring one prediction."""

    value: float | None
    """0..1, or ``None`` when unscored."""
    details: dict = dataclasses.field(default_factory=dict)


_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(answer))


def f1(prediction: str, answer: str) -> float:
    """Token-level F1 of the normalised texts (SQuAD)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not pred or not gold:
        return float(pred == gold)
    common = collections.Counter(pred) & collections.Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def contains_answer(prediction: str, answer: str) -> float:
    """1 when the normalised answer appears in the normalised prediction as whole words."""
    gold = normalize_answer(answer)
    if not gold:
        return 0.0
    return float(f" {gold} " in f" {normalize_answer(prediction)} ")


_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def _numbers(text: str) -> list[tuple[float, int]]:
    """Numbers in ``text`` with their count of decimals (``1,234.50`` → (1234.5, 2))."""
    out = []
    for match in _NUMBER.finditer(str(text)):
        token = match.group().replace(",", "")
        decimals = len(token.split(".")[1].split("e")[0].split("E")[0]) if "." in token else 0
        try:
            out.append((float(token), decimals))
        except ValueError:
            continue
    return out


def numeric_match(prediction: str, answer: str) -> float:
    """1 when the prediction's last number equals the answer's number, allowing the
    prediction more decimals than an answer with decimals gives (3.14159 matches 3.14,
    but 3.4 does not match 3) and ignoring
    thousands separators, units and percent signs. Falls back to exact match when the
    answer holds no number."""
    gold = _numbers(answer)
    if not gold:
        return exact_match(prediction, answer)
    pred = _numbers(prediction)
    if not pred:
        return 0.0
    value, (target, decimals) = pred[-1][0], gold[0]
    if math.isclose(value, target, rel_tol=1e-6, abs_tol=1e-12):
        return 1.0
    return float(decimals > 0 and round(value, decimals) == round(target, decimals))


TEXT_METRICS: dict[str, Callable[[str, str], float]] = {
    "exact_match": exact_match,
    "f1": f1,
    "contains_answer": contains_answer,
    "numeric_match": numeric_match,
}

JUDGE_PROMPT = """You are grading an answer to a question against the reference answer(s).

Question:
{question}

Reference answer(s):
{answers}

Answer to grade:
{prediction}

Is the answer to grade correct, i.e. does it state the same thing as a reference answer (wording, format and extra detail may differ)? Reply with exactly one word: CORRECT or INCORRECT."""

_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b")


def parse_verdict(text: str | None) -> float | None:
    """1.0 for CORRECT, 0.0 for INCORRECT, ``None`` when the reply says neither (or both)."""
    found = set(_VERDICT.findall((text or "").upper()))
    if len(found) != 1:
        return None
    return 1.0 if found == {"CORRECT"} else 0.0


def llm_judge(judge: ChatModel, question: str, prediction: str, answers: list[str]) -> Score:
    """Ask ``judge`` whether ``prediction`` answers ``question``; unparseable or failed → unscored."""
    prompt = JUDGE_PROMPT.format(question=question, answers="\n".join(f"- {a}" for a in answers) or "(none)",
                                 prediction=prediction)
    try:
        reply = judge.chat([{"role": "user", "content": prompt}])
    except LLMError as err:
        return Score(None, {"unscored_reason": f"judge request failed: {err}"})
    verdict = parse_verdict(reply.content)
    # a verdict the model-call cache answered was not paid for: its tokens count 0
    paid = Usage() if getattr(reply, "cache_hit", False) else reply.usage
    details: dict[str, Any] = {"judge_model": judge.model, "judge_reply": (reply.content or "")[:2000],
                               "judge_tokens": paid.total_tokens,
                               # the split the judge's cost needs (see agentflow.llm.pricing)
                               "judge_prompt_tokens": paid.prompt_tokens,
                               "judge_completion_tokens": paid.completion_tokens,
                               "judge_cached_prompt_tokens": paid.cached_prompt_tokens}
    if getattr(reply, "cache_hit", False):
        details["judge_cache_hit"] = True
    if verdict is None:
        details["unscored_reason"] = "the judge's verdict could not be parsed"
    return Score(verdict, details)


def score_prediction(metric: str, prediction: str | None, answers: list[str], *, question: str = "",
                     judge: ChatModel | None = None) -> Score:
    """Score ``prediction`` with ``metric`` (canonical name); best over ``answers``.

    A task without answers is unscored; a missing prediction scores 0.
    """
    if not answers:
        return Score(None, {"unscored_reason": "the task has no answer to compare with"})
    if prediction is None or not str(prediction).strip():
        return Score(0.0, {"reason": "no answer"})
    if metric == "llm_judge":
        if judge is None:
            raise ValueError("llm_judge needs a judge model")
        return llm_judge(judge, question, prediction, answers)
    func = TEXT_METRICS[metric]
    scores = [func(prediction, a) for a in answers]
    best = max(range(len(scores)), key=scores.__getitem__)
    return Score(scores[best], {"matched_answer": answers[best]} if len(answers) > 1 else {})


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate from ``n`` samples of which ``c`` passed (Chen et al., 2021)."""
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod((n - c - i) / (n - i) for i in range(k))
