"""Benchmark tasks: loading JSONL/JSON files or in-memory lists.

A task is ``{id|task_id, question|query|input, answer|ground_truth, kwargs?, ...}``.
``answer`` may be a string or a list of accepted answers; ``kwargs`` are merged into the
parameters of every tool call that accepts them (e.g. ``seed_path``, ``db_id``); every
other field is kept as metadata.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..config import ConfigError

__all__ = ["Task", "dataset_checksum", "load_tasks", "read_records", "select_tasks"]

_ID_KEYS = ("id", "task_id")
_QUESTION_KEYS = ("question", "query", "input")
_ANSWER_KEYS = ("answer", "ground_truth")


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark question."""

    id: str
    question: str
    answer: Any = None
    """A string, a list of accepted strings, or ``None`` (nothing to score against)."""
    kwargs: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def answers(self) -> list[str]:
        """The accepted answers as strings."""
        if self.answer is None:
            return []
        if isinstance(self.answer, (list, tuple)):
            return [str(a) for a in self.answer if a is not None]
        return [str(self.answer)]

    def identity(self) -> dict:
        return {"id": self.id, "question": self.question, "answer": self.answer, "kwargs": self.kwargs}


def load_tasks(tasks_or_path: str | os.PathLike | Iterable[dict | str]) -> list[Task]:
    """Load tasks from a ``.jsonl``/``.json`` file or a list of dicts (or of question strings).

    Tasks without an id get ``task_<n>`` (their 1-based position). A JSON file may hold a
    list or ``{"tasks": [...]}``.

    Raises:
        ConfigError: the file is missing or malformed, a task has no question, or two
            tasks share an id; the message names the file and line.
    """
    if isinstance(tasks_or_path, (str, os.PathLike)):
        path = Path(tasks_or_path)
        records = list(_read_file(path))
        where = str(path)
    else:
        records = [({"question": r} if isinstance(r, str) else r, i + 1) for i, r in enumerate(tasks_or_path)]
        where = "tasks"
    tasks: list[Task] = []
    seen: set[str] = set()
    for position, (record, line) in enumerate(records, start=1):
        task = _to_task(record, position, f"{where}:{line}")
        if task.id in seen:
            raise ConfigError(f"{where}:{line}: duplicate task id {task.id!r}")
        seen.add(task.id)
        tasks.append(task)
    return tasks


def select_tasks(tasks: list[Task], task_ids: list[str] | None = None, number_of_tasks: int | None = None) -> list[Task]:
    """Keep the tasks named in ``task_ids`` (in file order), then the first ``number_of_tasks``.

    Raises:
        ConfigError: a requested id is not in the dataset.
    """
    if task_ids:
        known = {t.id for t in tasks}
        missing = [t for t in task_ids if t not in known]
        if missing:
            raise ConfigError(f"'task_ids' names task(s) not in the dataset: {', '.join(missing[:10])}")
        wanted = set(task_ids)
        tasks = [t for t in tasks if t.id in wanted]
    if number_of_tasks is not None:
        tasks = tasks[:number_of_tasks]
    return tasks


def dataset_checksum(tasks: list[Task]) -> str:
    """sha256 over the tasks' ids, questions, answers and kwargs, in order."""
    h = hashlib.sha256()
    for task in tasks:
        h.update(json.dumps(task.identity(), sort_keys=True, ensure_ascii=False, default=str).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def read_records(path: str | os.PathLike):
    """The records of a task file with their line numbers (JSON: their 1-based
    position), unchecked: ``(record, line)`` pairs.

    Raises:
        ConfigError: the file is missing, unreadable or not valid JSON / JSONL.
    """
    return _read_file(Path(path))


def _read_file(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"task file not found: {path}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except OSError as err:
        raise ConfigError(f"cannot read task file {path}: {err}") from err
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from None
        if isinstance(data, dict) and isinstance(data.get("tasks"), list):
            data = data["tasks"]
        if not isinstance(data, list):
            raise ConfigError(f"{path}: expected a list of tasks or {{\"tasks\": [...]}}")
        yield from ((r, i + 1) for i, r in enumerate(data))
        return
    # JSONL lines end at "\n" only: str.splitlines() would also cut at U+2028, U+0085 and
    # other characters a JSON string may hold unescaped
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line), lineno
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{lineno}: invalid JSON: {err.msg}") from None


def _to_task(record: Any, position: int, where: str) -> Task:
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: a task must be a JSON object, got {type(record).__name__}")
    rest = dict(record)
    task_id = next((rest.pop(k) for k in _ID_KEYS if k in rest), None)
    for k in _ID_KEYS:
        rest.pop(k, None)
    question = next((rest.pop(k) for k in _QUESTION_KEYS if k in rest), None)
    if not isinstance(question, str) or not question.strip():
        raise ConfigError(f"{where}: task has no question (one of {', '.join(_QUESTION_KEYS)})")
    answer = next((rest.pop(k) for k in _ANSWER_KEYS if k in rest), None)
    kwargs = rest.pop("kwargs", None) or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{where}: 'kwargs' must be an object")
    return Task(id=str(task_id) if task_id is not None else f"task_{position}", question=question,
                answer=answer, kwargs=kwargs, metadata=rest)
