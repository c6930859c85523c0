"""Replay: answer a rollout's tool calls from a recorded run instead of the sandbox.

With the config key ``replay: RUN_ID`` (flag ``--replay RUN_ID``) the agent's tool calls
are not executed: the *k*-th call that reaches the sandbox in task T, sample S is
answered with the result of the *k*-th such call of the newest attempt of T, sample S in
run ``RUN_ID`` (its ``rollout_tool_calls`` rows: the text the model was shown before
truncation, the code, the error, the timing metadata, the audit ``request_id``), once
its action and parameters are checked to be the recorded ones. Together with
``cache: read_only`` a rerun is then exact even where a tool is not deterministic (a
clock, random numbers, a changing web page): the same requests reach the model cache.

A call that differs from the recording (another action or parameters, or more calls
than were recorded) ends the attempt as ``infra_error`` with a ``replay mismatch: …``
error naming both calls. It does not fall back to a real call: the recorded calls before
it were never executed in this run's sessions, so a real call would see other state
(working directory, files, Python variables) and its result would mean nothing.

Calls that never reach the sandbox (an unknown tool, arguments that are not JSON) are
answered by rollout itself as always and take no position.
"""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from ..db.rollout import RolloutAttempt, RolloutRun, RolloutToolCall

__all__ = ["RecordedCalls", "ReplayMismatch", "ReplaySource", "UnknownReplayRun"]


class ReplayMismatch(Exception):
    """The rerun's tool call is not the recorded one at its position."""


class UnknownReplayRun(LookupError):
    """``replay`` names no rollout run in the database."""


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RecordedCalls:
    """The recorded sandbox calls of one task sample, served in order."""

    def __init__(self, run_id: str, task_id: str, sample: int, calls: list[dict] | None):
        self.run_id, self.task_id, self.sample = run_id, task_id, sample
        self.calls = calls
        """``None``: the recorded run has no attempt of this task sample."""
        self.position = 0

    def next(self, action: str, params: dict) -> dict:
        """The recorded result for this call (the next position).

        Raises:
            ReplayMismatch: no recorded call here, or another action or parameters.
        """
        k = self.position
        self.position += 1
        where = f"run {self.run_id!r}, task {self.task_id!r} sample {self.sample}, tool call #{k + 1}"
        if self.calls is None:
            raise ReplayMismatch(f"{where}: the recorded run has no attempt of this task sample")
        if k >= len(self.calls):
            raise ReplayMismatch(f"{where} is {action} {_short(params)}, but the recorded attempt made only "
                                 f"{len(self.calls)} tool call(s)")
        rec = self.calls[k]
        if rec["action"] != action or not _same(rec["params"], params):
            raise ReplayMismatch(f"{where} is {action} {_short(params)}, but the recorded call was "
                                 f"{rec['action']} {_short(rec['params'])}")
        if rec["result"] is None:
            raise ReplayMismatch(f"{where}: the recorded call has no result (it failed: {rec['error']})")
        return rec


class ReplaySource:
    """A recorded rollout run whose tool results a rerun is served.

    Raises:
        UnknownReplayRun: no rollout run ``run_id`` in the database.
    """

    def __init__(self, sessions, run_id: str):
        self.sessions, self.run_id = sessions, run_id
        with sessions() as s:
            if s.get(RolloutRun, run_id) is None:
                raise UnknownReplayRun(f"replay: no rollout run {run_id!r} in this database (see "
                                       f"`agentflow runs list`)")

    def for_task(self, task_id: str, sample: int) -> RecordedCalls:
        """The recorded calls of the newest attempt of ``task_id`` sample ``sample``."""
        with self.sessions() as s:
            attempt_id = s.scalar(select(RolloutAttempt.id).where(
                RolloutAttempt.run_id == self.run_id, RolloutAttempt.task_id == task_id,
                RolloutAttempt.sample_index == sample).order_by(RolloutAttempt.attempt.desc()).limit(1))
            if attempt_id is None:
                return RecordedCalls(self.run_id, task_id, sample, None)
            rows = s.scalars(select(RolloutToolCall).where(RolloutToolCall.attempt_id == attempt_id)
                             .order_by(RolloutToolCall.id)).all()
            # a call without params never reached the sandbox (unknown tool, bad JSON)
            calls = [{"action": r.action, "params": r.params, "code": r.code, "error": r.error, "result": r.result,
                      "result_meta": r.result_meta, "request_id": r.request_id, "session_id": r.session_id}
                     for r in rows if r.params is not None]
        return RecordedCalls(self.run_id, task_id, sample, calls)
