"""The contamination check of synthesis: ``overlaps_benchmark``.

A synthesized question that repeats a benchmark's question would leak that benchmark
into training data made from it. With the config key::

    "contamination": {"benchmarks": ["benchmark/rag.jsonl", "/data/hotpot_dev.jsonl"],
                      "ngram": 8, "threshold": 0.5}

every QA candidate's question is compared with the questions of those files (rollout
benchmark files: JSONL, or JSON holding a list or ``{"tasks": [...]}``; the question is
the task's ``question``, ``query`` or ``input``). Both sides are normalised as the other
QA checks do (lower case, punctuation and articles removed, whitespace collapsed) and cut
into word n-grams of ``ngram`` words. The **overlap** is the share of the candidate's
n-grams found in any benchmark question; a candidate whose overlap *exceeds*
``threshold`` is rejected with reason ``overlaps_benchmark`` (its ``checks`` entry keeps
the overlap, the benchmark file and the closest benchmark question). A question shorter
than ``ngram`` words is compared as one n-gram of its own length, so a short question
copied from a benchmark is caught too.

Defaults: ``ngram`` 8 (1–64), ``threshold`` 0.5 (0 ≤ threshold < 1: 0 rejects any shared
n-gram). The files are read when the run starts: a missing or unreadable file, a line
that is not JSON or has no question, a file without questions, an unknown key or a value
out of range is a :class:`~agentflow.config.ConfigError` before any model call.
"""
from __future__ import annotations

import dataclasses
import hashlib
import threading
from pathlib import Path
from typing import Any

from ..config import ConfigError, as_float, as_int
from .qa import normalize_text

__all__ = ["DEFAULT_NGRAM", "DEFAULT_THRESHOLD", "BenchmarkIndex", "parse_contamination"]

DEFAULT_NGRAM = 8
DEFAULT_THRESHOLD = 0.5
MAX_NGRAM = 64
_KEYS = ("benchmarks", "ngram", "threshold")
_QUESTION_KEYS = ("question", "query", "input")


def parse_contamination(value: Any, where: str = "") -> dict | None:
    """The ``contamination`` config value checked and with its defaults:
    ``{"benchmarks": [str, ...], "ngram": int, "threshold": float}`` (``None``: off).
    The files are not read here (see :meth:`BenchmarkIndex.load`).

    Raises:
        ConfigError: not an object, an unknown key, no benchmark, a benchmark that is not
            a non-empty string, ``ngram`` outside 1–64, ``threshold`` outside [0, 1).
    """
    label = f"{where}'contamination'"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{label} must be an object {{\"benchmarks\": [files], \"ngram\": 8, \"threshold\": 0.5}}, "
                          f"got {value!r}")
    unknown = sorted(k for k in value if k not in _KEYS and not str(k).startswith("_"))
    if unknown:
        raise ConfigError(f"{label} has unknown key(s) {', '.join(map(repr, unknown))}; known: {', '.join(_KEYS)}")
    benchmarks = value.get("benchmarks")
    if isinstance(benchmarks, str):
        benchmarks = [benchmarks]
    if not isinstance(benchmarks, list) or not benchmarks:
        raise ConfigError(f"{where}'contamination.benchmarks' must be a non-empty list of benchmark files, got {benchmarks!r}")
    for i, b in enumerate(benchmarks):
        if not isinstance(b, str) or not b.strip():
            raise ConfigError(f"{where}'contamination.benchmarks[{i}]' must be a file path, got {b!r}")
    ngram = as_int(value.get("ngram", DEFAULT_NGRAM), f"{where}'contamination.ngram'", 1)
    if ngram > MAX_NGRAM:
        raise ConfigError(f"{where}'contamination.ngram' must be an integer in [1, {MAX_NGRAM}], got {ngram!r}")
    threshold = as_float(value.get("threshold", DEFAULT_THRESHOLD), f"{where}'contamination.threshold'", 0.0, 1.0)
    if threshold >= 1.0:
        raise ConfigError(f"{where}'contamination.threshold' must be a number in [0, 1) (an overlap never exceeds 1, so 1 would "
                          f"reject nothing), got {value.get('threshold')!r}")
    return {"benchmarks": list(benchmarks), "ngram": ngram, "threshold": threshold}


def _grams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


@dataclasses.dataclass
class _Question:
    file: int
    line: int
    text: str
    tokens: list[str]


class BenchmarkIndex:
    """The n-grams of the configured benchmarks' questions. Thread-safe (seeds run in
    parallel): the n-grams of shorter lengths, for short candidates, are built on first
    use under a lock."""

    def __init__(self, files: list[str], questions: list[_Question], ngram: int, threshold: float,
                 checksums: list[str]):
        self.files, self.ngram, self.threshold, self.checksums = files, ngram, threshold, checksums
        self._questions = questions
        self._lock = threading.Lock()
        self._by_n: dict[int, dict[tuple[str, ...], int]] = {}
        self._index(ngram)

    @classmethod
    def load(cls, settings: dict, resolve=lambda p: Path(p)) -> "BenchmarkIndex":
        """Read the benchmarks of a parsed ``contamination`` value; ``resolve`` turns a
        configured path into a file (relative paths: see the config's ``resolve_path``).

        Raises:
            ConfigError: a file is missing or unreadable, a line is not JSON or has no
                question, or a file has no question at all.
        """
        from ..rollout.tasks import read_records

        files, questions, checksums = [], [], []
        for i, name in enumerate(settings["benchmarks"]):
            label = f"'contamination.benchmarks[{i}]'"
            path = resolve(name)
            if not path.is_file():
                raise ConfigError(f"{label}: benchmark file not found: {path}"
                                  + (" (a folder; name the JSONL file inside it)" if path.is_dir() else ""))
            try:
                checksums.append(hashlib.sha256(path.read_bytes()).hexdigest())
                records = list(read_records(path))
            except ConfigError as err:
                raise ConfigError(f"{label}: {err}") from None
            except OSError as err:
                raise ConfigError(f"{label}: cannot read {path}: {err}") from None
            found = 0
            for record, line in records:
                question = next((record.get(k) for k in _QUESTION_KEYS if k in record), None) \
                    if isinstance(record, dict) else None
                if not isinstance(question, str):
                    raise ConfigError(f"{label}: {path}:{line}: a task with no question (one of "
                                      f"{', '.join(_QUESTION_KEYS)}, a string)")
                tokens = normalize_text(question).split()
                if tokens:
                    questions.append(_Question(i, line, question, tokens))
                    found += 1
            if not found:
                raise ConfigError(f"{label}: {path} has no questions")
            files.append(str(path))
        return cls(files, questions, settings["ngram"], settings["threshold"], checksums)

    def _index(self, n: int) -> dict[tuple[str, ...], int]:
        """``{n-gram: index of the first question holding it}`` (built once per ``n``)."""
        with self._lock:
            table = self._by_n.get(n)
            if table is None:
                table = {}
                for qi, q in enumerate(self._questions):
                    for gram in _grams(q.tokens, n) if len(q.tokens) >= n else ():
                        table.setdefault(gram, qi)
                self._by_n[n] = table
            return table

    def overlap(self, question: str) -> dict:
        """How much of ``question`` the benchmarks hold: ``{"overlap", "ngram",
        "threshold", "ok", "benchmark", "closest"}`` (``benchmark`` and ``closest`` are the
        file and the question sharing most n-grams, ``None`` when none is shared)."""
        tokens = normalize_text(question).split()
        n = min(self.ngram, len(tokens))
        if n == 0:
            return {"ok": True, "overlap": 0.0, "ngram": self.ngram, "threshold": self.threshold,
                    "benchmark": None, "closest": None}
        table = self._index(n)
        grams = _grams(tokens, n)
        owners: dict[int, int] = {}
        hits = 0
        for gram in grams:
            qi = table.get(gram)
            if qi is not None:
                hits += 1
                owners[qi] = owners.get(qi, 0) + 1
        ratio = hits / len(grams)
        best = max(owners, key=lambda k: (owners[k], -k)) if owners else None
        closest = self._questions[best] if best is not None else None
        return {"ok": ratio <= self.threshold, "overlap": round(ratio, 4), "ngram": n, "threshold": self.threshold,
                "benchmark": self.files[closest.file] if closest else None,
                "closest": closest.text[:300] if closest else None,
                "line": closest.line if closest else None}

    def identity(self) -> dict:
        """What enters the run's fingerprint: the settings and the files' contents."""
        return {"ngram": self.ngram, "threshold": self.threshold, "benchmarks_sha256": self.checksums}
