"""Training data from a rollout run (``agentflow runs export RUN --format ...``).

Each kept trajectory becomes one JSONL record holding the messages exactly as the model
saw them (from ``rollout_messages``: tool results as capped by ``max_tool_output_chars``,
with the truncation note), the tool schemas the task was offered (the run's stored
``spec["tools"]`` with the task's injected ``kwargs`` removed, as rollout sends them), and
its score and provenance ids. Three formats:

* ``openai-chat`` — OpenAI chat fine-tuning lines: only ``messages`` and ``tools``
  (OpenAI's file check rejects other keys), so score and provenance go line by line to a
  ``*.provenance.jsonl`` file beside it;
* ``sharegpt`` — LLaMA-Factory's ShareGPT layout with tools (``conversations`` of
  ``human``/``gpt``/``function_call``/``observation``, ``system``, ``tools`` as a JSON
  string) plus the provenance fields;
* ``sft-jsonl`` — ``messages`` and ``tools`` (the layout TRL's SFT trainer reads) with the
  score, outcome, question, answer and provenance in the same record.

Scores are those of the chosen scoring (the newest rescoring, or the run's own scores
when it has none), the same as ``agentflow runs show``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from ..db.rollout import RolloutAttempt, RolloutRun
from ..runfiles import write_lines
from .agent import task_tool_specs
from .rescore import UnknownRun, choose_scoring
from .store import AttemptScores, _task_order, get_run, latest_attempts

__all__ = ["FORMATS", "BadFilter", "ExportFilter", "UnknownFormat", "export_training", "provenance_path",
           "training_records"]


class UnknownFormat(ValueError):
    """A ``--format`` that is not one of :data:`FORMATS`."""


class BadFilter(ValueError):
    """A filter value that cannot be used (``--min-score`` outside 0..1, an unknown outcome)."""


OUTCOMES = ("completed", "max_turns", "timeout", "error", "infra_error")


@dataclasses.dataclass
class ExportFilter:
    """Which trajectories to keep."""

    min_score: float | None = None
    """Keep attempts scoring at least this (an unscored attempt is dropped)."""
    outcome: str | None = None
    """Keep attempts with this outcome (``completed``, ...)."""
    dedup: bool = False
    """Drop a trajectory equal to an earlier one (same messages and tools, tool call ids aside)."""

    def check(self) -> None:
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise BadFilter(f"--min-score must be between 0 and 1 (scores are 0..1), got {self.min_score:g}")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise BadFilter(f"unknown outcome {self.outcome!r}; known: {', '.join(OUTCOMES)}")


def parse_min_score(text: str | None) -> float | None:
    """``--min-score`` as a float in 0..1 (:class:`BadFilter` otherwise)."""
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BadFilter(f"--min-score must be a number between 0 and 1, got {text!r}") from None
    if value != value:  # NaN passes no comparison, so it would keep nothing silently
        raise BadFilter("--min-score must be a number between 0 and 1, got nan")
    return value


def model_messages(a: RolloutAttempt) -> list[dict]:
    """The conversation as sent to the model: the request's keys only (``role``,
    ``content`` — ``None`` for an assistant turn of only tool calls, as it was sent —
    ``tool_calls``, ``tool_call_id``); timing and token columns stay in the database."""
    out = []
    for m in a.messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls is not None:
            msg["tool_calls"] = m.tool_calls
        if m.tool_call_id is not None:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def offered_tools(run: RolloutRun, a: RolloutAttempt) -> list[dict] | None:
    """The tool schemas the attempt's task was offered; ``None`` for a run from before
    tool schemas were stored (or one offered no tools)."""
    specs = (run.spec or {}).get("tools")
    if not specs:
        return None
    return task_tool_specs(specs, (a.task_metadata or {}).get("kwargs") or {}) or None


def provenance(run: RolloutRun, a: RolloutAttempt, scores: AttemptScores) -> dict:
    scoring = scores.describe()
    return {"run_id": run.id, "task_id": a.task_id, "sample": a.sample_index, "attempt": a.attempt,
            "trace_id": a.trace_id, "model": run.model_name, "outcome": a.status, "score": scores.score(a),
            "metric": scores.metric(run), "scoring_id": scoring["id"] if scoring else None}


def _dedup_key(messages: list[dict], tools: list[dict] | None) -> str:
    """A hash of the trajectory with tool call ids renamed by order of appearance: models
    draw fresh ids, so two equal trajectories would otherwise never match."""
    names: dict[str, str] = {}

    def rename(call_id: str | None) -> str | None:
        if call_id is None:
            return None
        return names.setdefault(call_id, f"call_{len(names)}")

    norm = []
    for m in messages:
        m = dict(m)
        if m.get("tool_calls"):
            m["tool_calls"] = [{**c, "id": rename(c.get("id"))} for c in m["tool_calls"]]
        if m.get("tool_call_id") is not None:
            m["tool_call_id"] = rename(m["tool_call_id"])
        norm.append(m)
    text = json.dumps({"messages": norm, "tools": tools}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------ formats

def openai_chat_record(messages: list[dict], tools: list[dict] | None, prov: dict, a: RolloutAttempt) -> dict:
    record: dict[str, Any] = {"messages": messages}
    if tools:
        record["tools"] = tools
    return record


def _call_json(call: dict) -> dict:
    fn = call.get("function") or {}
    args = fn.get("arguments")
    try:
        args = json.loads(args) if isinstance(args, str) else args
    except ValueError:
        pass  # malformed arguments are kept as the model wrote them
    return {"name": fn.get("name"), "arguments": args}


def sharegpt_record(messages: list[dict], tools: list[dict] | None, prov: dict, a: RolloutAttempt) -> dict:
    """LLaMA-Factory ShareGPT: turns alternate (human or observation, then gpt or
    function_call), so the results of one turn's tool calls form one observation (a JSON
    list of their texts when there are several) and an assistant turn that calls tools is
    one function_call (its calls as a JSON list when several; text beside the calls is
    not kept, the layout has no place for it)."""
    system = "\n".join(m["content"] or "" for m in messages if m["role"] == "system")
    turns: list[dict] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            value = pending[0] if len(pending) == 1 else json.dumps(pending, ensure_ascii=False)
            turns.append({"from": "observation", "value": value})
            pending.clear()

    for m in messages:
        if m["role"] == "tool":
            pending.append(m["content"] or "")
            continue
        flush()
        if m["role"] == "user":
            turns.append({"from": "human", "value": m["content"] or ""})
        elif m["role"] == "assistant" and m.get("tool_calls"):
            calls = [_call_json(c) for c in m["tool_calls"]]
            turns.append({"from": "function_call",
                          "value": json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)})
        elif m["role"] == "assistant":
            turns.append({"from": "gpt", "value": m["content"] or ""})
    flush()
    record: dict[str, Any] = {"conversations": turns, "system": system,
                              "tools": json.dumps([t["function"] for t in tools or []], ensure_ascii=False)}
    record.update(prov)
    return record


def sft_record(messages: list[dict], tools: list[dict] | None, prov: dict, a: RolloutAttempt) -> dict:
    return {"messages": messages, "tools": tools or [], **prov, "question": a.question, "answer": a.ground_truth,
            "prediction": a.prediction}


FORMATS: dict[str, Callable[[list[dict], list[dict] | None, dict, RolloutAttempt], dict]] = {
    "openai-chat": openai_chat_record,
    "sharegpt": sharegpt_record,
    "sft-jsonl": sft_record,
}


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UnknownFormat(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    return fmt


# ------------------------------------------------------------------ the export

def _kept(attempts: Iterable[RolloutAttempt], run: RolloutRun, scores: AttemptScores,
          flt: ExportFilter) -> Iterable[tuple[RolloutAttempt, list[dict], list[dict] | None]]:
    seen: set[str] = set()
    for a in attempts:
        if flt.outcome is not None and a.status != flt.outcome:
            continue
        if flt.min_score is not None:
            value = scores.score(a)
            if value is None or value < flt.min_score:
                continue
        messages, tools = model_messages(a), offered_tools(run, a)
        if flt.dedup:
            key = _dedup_key(messages, tools)
            if key in seen:
                continue
            seen.add(key)
        yield a, messages, tools


def training_records(session: Session, run_id: str, fmt: str, flt: ExportFilter | None = None, *,
                     scoring_id: int | None = None) -> list[tuple[dict, dict]]:
    """``(record, provenance)`` of each kept trajectory of the run's newest attempts, in
    dataset order.

    Raises:
        UnknownRun, UnknownFormat, BadFilter, rescore.UnknownScoring.
    """
    check_format(fmt)
    flt = flt or ExportFilter()
    flt.check()
    run = get_run(session, run_id)
    if run is None:
        raise UnknownRun(f"no rollout run {run_id!r} in this database")
    scores = AttemptScores(choose_scoring(session, run_id, scoring_id))
    ids = [a.id for a in latest_attempts(session, run_id).values()]
    attempts = list(session.scalars(select(RolloutAttempt).where(RolloutAttempt.id.in_(ids))
                                    .options(selectinload(RolloutAttempt.messages)))) if ids else []
    order = _task_order(run)
    attempts.sort(key=lambda a: (order.get(a.task_id, len(order)), a.task_id, a.sample_index))
    out = []
    for a, messages, tools in _kept(attempts, run, scores, flt):
        prov = provenance(run, a, scores)
        out.append((FORMATS[fmt](messages, tools, prov, a), prov))
    return out


def provenance_path(path: Path) -> Path:
    """``train.jsonl`` → ``train.provenance.jsonl`` (the openai-chat side file)."""
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(stem + ".provenance.jsonl")


def export_training(session: Session, run_id: str, fmt: str, output: str | Path | None = None,
                    flt: ExportFilter | None = None, *, scoring_id: int | None = None) -> dict:
    """Write the run's training records to ``output`` (default
    ``<run output_dir>/train-<format>.jsonl``); returns what was written.

    Raises:
        UnknownRun, UnknownFormat, BadFilter, rescore.UnknownScoring.
    """
    rows = training_records(session, run_id, fmt, flt, scoring_id=scoring_id)
    run = get_run(session, run_id)
    path = Path(output) if output else Path(run.output_dir or ".") / f"train-{fmt}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_lines(path, (json.dumps(r, ensure_ascii=False) for r, _ in rows))
    written = {"file": str(path), "records": len(rows), "format": fmt, "provenance_file": None}
    if fmt == "openai-chat":  # the fine-tuning lines cannot carry it: one provenance line per record
        side = provenance_path(path)
        write_lines(side, (json.dumps(p, ensure_ascii=False) for _, p in rows))
        written["provenance_file"] = str(side)
    return written
