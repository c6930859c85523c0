"""Synthesized QA as a rollout benchmark, and each QA pair's difficulty from the rollouts
that ran it (``agentflow runs export SYNTH_RUN --as-benchmark``, ``agentflow runs qa``).

:func:`export_benchmark` writes a run's accepted QA pairs as task lines that
``agentflow rollout`` reads (:func:`agentflow.rollout.load_tasks`)::

    {"id": "qa-17", "question": "...", "answer": "...", "kwargs": {"seed_path": "..."},
     "synthesis": {"run_id": "syn-1", "qa_id": 17, "seed_index": 0, "path_id": 4}}

``id`` is ``qa-<synthesis_qa.id>``; ``kwargs`` are the seed's (merged into the agent's
tool calls, as during synthesis); ``synthesis`` names the QA pair, and a rollout over the
file links each attempt to it (:mod:`agentflow.rollout.qa_links`).

:func:`qa_difficulty` reads those links back: for each QA pair and each rollout run that
answered it, the number of samples with a score, how many passed (score ≥
:data:`~agentflow.rollout.metrics.PASS_THRESHOLD`) and pass@k — from the newest attempt
of each sample, scored by the rollout run's newest rescoring when it has one (as
``agentflow runs show`` does), else by the scores the run gave. A sample whose newest
attempt is an infrastructure failure (it is retried on resume), or that is unscored (an
unparseable judge verdict, or a run without scoring), is not counted.
"""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db.rollout import ATTEMPT_INFRA_ERROR, RolloutAttempt, RolloutRun
from ..db.synthesis import QA_ACCEPTED, SynthesisQA, SynthesisQAAttempt, SynthesisSeed
from ..runfiles import write_lines

__all__ = ["BENCHMARK_FILE", "BadSolvedFilter", "Difficulty", "SolvedFilter", "benchmark_lines",
           "export_benchmark", "parse_solved", "qa_difficulty", "select_qa"]

BENCHMARK_FILE = "benchmark.jsonl"


class BadSolvedFilter(ValueError):
    """``--solved`` / ``--of`` that cannot be read (the message says what is expected)."""


@dataclasses.dataclass(frozen=True)
class SolvedFilter:
    """Keep QA pairs solved ``low``..``high`` times (inclusive), in exactly ``of`` scored
    samples when ``of`` is set, by rollout runs of ``model`` / the rollout run ``rollout``."""

    low: int | None = None
    high: int | None = None
    of: int | None = None
    rollout: str | None = None
    model: str | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.low, self.of, self.rollout, self.model))

    def keeps(self, d: "Difficulty") -> bool:
        if self.rollout is not None and d.rollout_run_id != self.rollout:
            return False
        if self.model is not None and d.model_name != self.model:
            return False
        if self.of is not None and d.samples != self.of:
            return False
        if self.low is not None and not (d.samples and self.low <= d.solved <= self.high):
            return False
        return True


_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_solved(solved: str | None, of: Any = None, *, rollout: str | None = None,
                 model: str | None = None) -> SolvedFilter:
    """``"1-3"`` (or ``"2"``) and ``8`` → a :class:`SolvedFilter`.

    Raises:
        BadSolvedFilter: not ``N`` or ``N-M`` with 0 ≤ N ≤ M, ``of`` not a whole number
            ≥ 1, or a range past ``of``.
    """
    low = high = None
    if solved is not None:
        m = _RANGE.match(str(solved))
        if not m:
            raise BadSolvedFilter(f"--solved must be N or N-M (times solved, e.g. 1-3), got {solved!r}")
        low = int(m.group(1))
        high = int(m.group(2)) if m.group(2) is not None else low
        if low > high:
            raise BadSolvedFilter(f"--solved {solved!r}: the range must go from low to high (e.g. 1-3)")
    count = None
    if of is not None:
        try:
            count = int(str(of).strip())
        except ValueError:
            raise BadSolvedFilter(f"--of must be a whole number of samples (e.g. 8), got {of!r}") from None
        if count < 1:
            raise BadSolvedFilter(f"--of must be at least 1, got {of!r}")
        if high is not None and high > count:
            raise BadSolvedFilter(f"--solved {solved!r} asks for more solves than --of {count} samples")
    return SolvedFilter(low, high, count, rollout, model)


@dataclasses.dataclass
class Difficulty:
    """How one rollout run did on one QA pair."""

    qa_id: int
    rollout_run_id: str
    model_name: str
    samples: int
    """Samples with a score (see the module docstring for what is not counted)."""
    solved: int
    """Of those, how many scored at least the pass threshold."""
    scoring: dict | None
    """The rescoring used (``None``: the run's own scores)."""
    metric: str | None
    pass_at_k: dict[str, float]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def qa_difficulty(session: Session, synthesis_run_id: str, qa_ids: list[int] | None = None) -> dict[int, list[Difficulty]]:
    """``{qa id: [Difficulty per rollout run]}`` for the run's linked QA pairs (those never
    run as a benchmark are absent)."""
    from ..rollout.metrics import PASS_THRESHOLD
    from ..rollout.rescore import choose_scoring
    from ..rollout.store import AttemptScores, newest_attempt

    L, A = SynthesisQAAttempt, RolloutAttempt
    q = (select(L.qa_id, L.rollout_run_id, A).join(A, A.id == L.attempt_id).join(SynthesisQA, SynthesisQA.id == L.qa_id)
         .where(SynthesisQA.run_id == synthesis_run_id, newest_attempt()))
    if qa_ids is not None:
        if not qa_ids:
            return {}
        q = q.where(L.qa_id.in_(qa_ids))
    groups: dict[tuple[int, str], list[RolloutAttempt]] = {}
    for qa_id, rollout_run_id, attempt in session.execute(q):
        groups.setdefault((qa_id, rollout_run_id), []).append(attempt)
    scorings: dict[str, AttemptScores] = {}
    runs: dict[str, RolloutRun] = {}
    out: dict[int, list[Difficulty]] = {}
    for (qa_id, rid), attempts in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        if rid not in scorings:
            scorings[rid] = AttemptScores(choose_scoring(session, rid))
            runs[rid] = session.get(RolloutRun, rid)
        scores, run = scorings[rid], runs[rid]
        counted = [a for a in attempts if a.status != ATTEMPT_INFRA_ERROR and scores.scored(a)]
        solved = sum(1 for a in counted if (scores.score(a) or 0.0) >= PASS_THRESHOLD)
        out.setdefault(qa_id, []).append(Difficulty(
            qa_id=qa_id, rollout_run_id=rid, model_name=run.model_name, samples=len(counted), solved=solved,
            scoring=scores.describe(), metric=scores.metric(run), pass_at_k=_pass_at_k(len(counted), solved)))
    return out


def _pass_at_k(n: int, c: int) -> dict[str, float]:
    from ..rollout.metrics import pass_at_k

    if not n:
        return {}
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= n} | {n})
    return {f"pass@{k}": round(pass_at_k(n, c, k), 6) for k in ks}


def select_qa(session: Session, synthesis_run_id: str, flt: SolvedFilter | None = None,
              *, accepted_only: bool = True) -> list[tuple[SynthesisQA, SynthesisSeed, list[Difficulty]]]:
    """The run's QA pairs (accepted ones by default) with their seed and difficulties, in
    id order; with an active filter, only the pairs one of whose difficulties it keeps
    (and only those difficulties)."""
    where = [SynthesisQA.run_id == synthesis_run_id]
    if accepted_only:
        where.append(SynthesisQA.status == QA_ACCEPTED)
    rows = session.execute(select(SynthesisQA, SynthesisSeed).join(SynthesisSeed, SynthesisSeed.id == SynthesisQA.seed_id)
                           .where(*where).order_by(SynthesisQA.id)).all()
    diffs = qa_difficulty(session, synthesis_run_id)
    out = []
    for qa, seed in rows:
        mine = diffs.get(qa.id, [])
        if flt is not None and flt.active:
            mine = [d for d in mine if flt.keeps(d)]
            if not mine:
                continue
        out.append((qa, seed, mine))
    return out


def benchmark_lines(synthesis_run_id: str, rows) -> list[dict]:
    """The task lines of :func:`export_benchmark` for ``rows`` of :func:`select_qa`."""
    lines = []
    for qa, seed, _ in rows:
        line: dict[str, Any] = {"id": f"qa-{qa.id}", "question": qa.question, "answer": qa.answer}
        if seed.kwargs:
            line["kwargs"] = seed.kwargs
        line["synthesis"] = {"run_id": synthesis_run_id, "qa_id": qa.id, "seed_index": seed.seed_index,
                             "path_id": qa.path_id}
        lines.append(line)
    return lines


_LINE_BREAKS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


def jsonl_line(value: Any) -> str:
    """``value`` as one JSON line, readable text kept (``ensure_ascii=False``) but with
    the characters other readers take for line breaks (U+2028, U+2029, U+0085, which
    JSON allows unescaped) escaped, so a line is one task whatever reads it."""
    text = json.dumps(value, ensure_ascii=False)
    for raw, escaped in _LINE_BREAKS.items():
        text = text.replace(raw, escaped)
    return text


def export_benchmark(session: Session, synthesis_run_id: str, output: str | Path | None = None,
                     flt: SolvedFilter | None = None) -> dict:
    """Write the run's accepted QA pairs (those ``flt`` keeps) as a rollout benchmark
    (JSONL; written to a temporary name and renamed). ``output`` defaults to
    ``<run output_dir>/benchmark.jsonl``; ``-`` returns the lines without writing.

    Returns:
        ``{"file", "tasks", "lines"}``.

    Raises:
        LookupError: no such synthesis run.
    """
    from .store import get_run

    run = get_run(session, synthesis_run_id)
    if run is None:
        raise LookupError(f"no synthesis run {synthesis_run_id!r} in this database")
    lines = benchmark_lines(run.id, select_qa(session, run.id, flt))
    if output == "-":
        return {"file": None, "tasks": len(lines), "lines": lines}
    target = Path(output) if output else Path(run.output_dir or ".") / BENCHMARK_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    write_lines(target, (jsonl_line(x) for x in lines))
    return {"file": str(target), "tasks": len(lines), "lines": lines}
