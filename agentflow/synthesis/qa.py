"""QA synthesis for a selected path, and the checks every candidate must pass (SPEC §7.3).

The model is offered one function, ``submit_qa(question, answer, reasoning_steps)``; its
arguments are the candidate (a JSON object in the reply text is accepted as a fallback
for models that answer in text). :func:`check_qa` then runs, in order:

``malformed``           question or answer missing, or not strings
``too_short`` / ``too_long``   length limits of question and answer
``answer_leaked``       the normalised answer appears in the normalised question
``unsupported_answer``  the answer is not found in the path's observations (verbatim after
                        normalisation, as a number, or by word recall ≥ ``min_answer_support``)
``too_few_hops``        fewer reasoning steps (or path steps) than ``min_hops``
``overlaps_benchmark``  the question's n-gram overlap with a configured benchmark exceeds
                        the threshold (only with the ``contamination`` config key; see
                        :mod:`agentflow.synthesis.contamination`)
``duplicate_question``  a near-duplicate of a question already accepted in the run

The first failed check is the rejection reason; all outcomes are kept in ``checks``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import re
import string
import threading
from typing import Any

from ..llm import ChatModel, Usage
from .prompts import SUBMIT_QA, SUBMIT_QA_NAME, qa_messages

__all__ = ["DuplicateIndex", "QACandidate", "check_qa", "generate_qa", "normalize_text", "trajectory_steps"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\.\d+)?")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_text(text: str) -> str:
    """SQuAD-style: lower case, punctuation and articles removed, whitespace collapsed.
    Decimal points and thousands separators between digits are kept."""
    text = str(text).lower()
    text = re.sub(r"(?<=\d)[.,](?=\d)", "\u00b7", text)  # protect 3.14 / 1,000 from the punctuation pass
    text = text.translate(_PUNCT).replace("\u00b7", ".")
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _numbers(text: str) -> set[float]:
    out = set()
    for m in _NUMBER.findall(text):
        try:
            out.add(round(float(m.replace(",", "")), 6))
        except ValueError:
            pass
    return out


@dataclasses.dataclass
class QACandidate:
    """What the model submitted for one path, and how it fared."""

    question: str | None = None
    answer: str | None = None
    reasoning_steps: list = dataclasses.field(default_factory=list)
    raw: str | None = None
    usage: Usage = dataclasses.field(default_factory=Usage)
    status: str = "rejected"
    reason: str | None = None
    checks: dict[str, Any] = dataclasses.field(default_factory=dict)


def trajectory_steps(nodes) -> list[dict]:
    """The steps of a path as plain dicts (prompt, checks and output files use them)."""
    return [{"node_id": n.id, "depth": n.depth, "intent": n.intent, "action": n.action,
             "params": n.shown_params if n.shown_params is not None else n.params, "observation": n.observation,
             "code": n.code} for n in nodes]


def generate_qa(model: ChatModel, cfg, seed, steps: list[dict]) -> QACandidate:
    """Ask the model for one QA pair grounded in ``steps``.

    Raises:
        LLMError: the model failed after its retries (the caller decides what that means).
    """
    reply = model.chat(qa_messages(cfg, seed, steps), tools=[SUBMIT_QA],
                       tool_choice={"type": "function", "function": {"name": SUBMIT_QA_NAME}})
    cand = QACandidate(usage=Usage() if reply.cache_hit else reply.usage)  # a cached answer was not paid for
    data: Any = None
    call = next((c for c in reply.tool_calls if c.name == SUBMIT_QA_NAME), None)
    if call is not None:
        cand.raw = call.arguments
        try:
            data = call.parse_arguments()
        except ValueError as err:
            cand.checks["malformed"] = {"ok": False, "detail": str(err)}
    else:
        cand.raw = reply.content
        data = _json_in_text(reply.content or "")
    if isinstance(data, dict):
        q, a, r = data.get("question"), data.get("answer"), data.get("reasoning_steps")
        cand.question = q if isinstance(q, str) else (None if q is None else json.dumps(q, ensure_ascii=False))
        cand.answer = a if isinstance(a, str) else (None if a is None else json.dumps(a, ensure_ascii=False))
        if isinstance(r, str):
            r = [s for s in re.split(r"\n+", r) if s.strip()]
        cand.reasoning_steps = [str(s) for s in r] if isinstance(r, list) else []
    return cand


def _json_in_text(text: str) -> dict | None:
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(value, dict):
                return value
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return None


class DuplicateIndex:
    """The accepted questions of a run, for the near-duplicate check. Thread-safe:
    :meth:`add_if_new` checks and adds in one step, so two seeds cannot both add the same
    question."""

    def __init__(self, threshold: float, questions: list[str] | None = None):
        self.threshold = threshold
        self._lock = threading.Lock()
        self._items: list[tuple[str, set[str]]] = []
        for q in questions or []:
            self._items.append(self._key(q))

    @staticmethod
    def _key(question: str) -> tuple[str, set[str]]:
        norm = normalize_text(question)
        return norm, set(norm.split())

    def _closest(self, norm: str, words: set[str]) -> tuple[float, str | None]:
        best, match = 0.0, None
        for other, other_words in self._items:
            jac = len(words & other_words) / len(words | other_words) if words | other_words else 1.0
            if jac < self.threshold * 0.6:
                continue
            ratio = max(jac, difflib.SequenceMatcher(None, norm, other).ratio())
            if ratio > best:
                best, match = ratio, other
        return best, match

    def remember(self, question: str) -> None:
        """Add a question accepted elsewhere (another process of the run), unchecked."""
        key = self._key(question)
        with self._lock:
            self._items.append(key)

    def add_if_new(self, question: str) -> tuple[bool, float, str | None]:
        """``(True, …)`` and remember it, or ``(False, similarity, closest)`` for a near-duplicate."""
        norm, words = self._key(question)
        with self._lock:
            best, match = self._closest(norm, words)
            if best >= self.threshold:
                return False, best, match
            self._items.append((norm, words))
            return True, best, match


def check_qa(cand: QACandidate, steps: list[dict], cfg, duplicates: DuplicateIndex | None,
             contamination=None) -> QACandidate:
    """Run every check on ``cand`` (see the module docstring); sets ``status``, ``reason``
    and ``checks``. ``contamination`` is the run's
    :class:`~agentflow.synthesis.contamination.BenchmarkIndex` (``None``: not checked). The duplicate check runs last and only for candidates that passed the
    rest, which it then records as accepted questions."""
    checks = cand.checks
    failed: list[str] = [k for k, v in checks.items() if not v.get("ok", True)]

    def record(name: str, ok: bool, **detail: Any) -> None:
        checks[name] = {"ok": ok, **detail}
        if not ok:
            failed.append(name)

    q, a = cand.question, cand.answer
    if "malformed" not in checks:
        record("malformed", bool(q and q.strip() and a and a.strip()))
    if q and a and q.strip() and a.strip():
        q, a = q.strip(), a.strip()
        record("too_short", len(q) >= cfg.min_question_chars, question_chars=len(q))
        record("too_long", len(q) <= cfg.max_question_chars and len(a) <= cfg.max_answer_chars,
               question_chars=len(q), answer_chars=len(a))
        nq, na = normalize_text(q), normalize_text(a)
        leaked = bool(na) and re.search(rf"(?<![\w.]){re.escape(na)}(?![\w]|\.\d)", nq) is not None
        record("answer_leaked", not leaked)
        support = answer_support(a, steps)
        supported = support["verbatim"] or support["numeric"] or (
            support["supported"] and support["recall"] >= cfg.min_answer_support)
        record("unsupported_answer", supported, **support)
        hops = min(len(cand.reasoning_steps), len(steps))
        record("too_few_hops", hops >= cfg.min_hops, reasoning_steps=len(cand.reasoning_steps),
               path_steps=len(steps), min_hops=cfg.min_hops)
        if contamination is not None:
            found = contamination.overlap(q)
            record("overlaps_benchmark", found.pop("ok"), **found)
    if not failed and duplicates is not None:
        new, similarity, closest = duplicates.add_if_new(q)
        record("duplicate_question", new, similarity=round(similarity, 4), closest=closest)
    cand.checks = checks
    cand.reason = failed[0] if failed else None
    cand.status = "rejected" if failed else "accepted"
    return cand


def answer_support(answer: str, steps: list[dict]) -> dict:
    """How well the path's successful observations support ``answer``."""
    text = "\n".join(s["observation"] or "" for s in steps if s.get("code") in (0, None))
    norm_obs = normalize_text(text)
    na = normalize_text(answer)
    verbatim = bool(na) and na in norm_obs
    answer_numbers = _numbers(answer)
    numeric = bool(answer_numbers) and answer_numbers <= _numbers(text)
    words = [w for w in na.split() if w]
    obs_words = set(norm_obs.split())
    recall = sum(1 for w in words if w in obs_words) / len(words) if words else 0.0
    # a number in the answer must itself be found; words alone do not support "42 items"
    supported = (not answer_numbers) or numeric
    return {"verbatim": verbatim, "numeric": numeric, "recall": round(recall, 4), "supported": supported}
