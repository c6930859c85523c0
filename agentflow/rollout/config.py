"""Rollout configuration: loading, validation and the run fingerprint.

The keys are those of AgentFlow's ``configs/infer/*.json`` and
``configs/trajectory/*.json`` plus a few of our own (``run_id``, ``resume``,
``n_samples``, ``temperature``, ``max_tokens``, ``request_timeout``, ``task_timeout``,
``max_tool_output_chars``, ``database_url``, and for runs that several processes work on,
``claim_lease`` and ``max_attempts``; the model-call cache ``cache`` and ``replay``).
Keys starting with ``_`` are comments.
An unknown key, or a value of the wrong type, is a :class:`~agentflow.config.ConfigError`
that names it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError, as_bool, as_float, as_int, read_config
from ..runfiles import find_data_file, fingerprint

__all__ = ["FINGERPRINT_VERSION", "RolloutConfig", "fingerprint", "load_config", "run_identity"]

FINGERPRINT_VERSION = 1
"""Version of :func:`run_identity`; bump it when the identity's contents change."""

METRIC_ALIASES = {
    "exact_match": "exact_match", "em": "exact_match",
    "f1": "f1", "f1_score": "f1",
    "contains_answer": "contains_answer", "contains": "contains_answer",
    "numeric_match": "numeric_match", "numeric": "numeric_match",
    "llm_judge": "llm_judge", "llm_as_judge": "llm_judge", "judge": "llm_judge",
    # AgentFlow's doc benchmark names its LLM-as-a-Judge metric after MMLongBench-Doc.
    "mmlongbench-doc_lasj": "llm_judge",
}


@dataclasses.dataclass
class RolloutConfig:
    """Everything a rollout needs. Build it with :func:`load_config`."""

    model_name: str = ""
    api_key: str | None = None
    base_url: str | None = None
    benchmark_name: str = "rollout"
    data_path: str | None = None
    output_dir: str | None = None
    system_prompt: str = ""
    """A list in the file is joined with newlines."""
    available_tools: list[str] = dataclasses.field(default_factory=list)
    """Tool names or wildcards (``rag:*``, ``bash-run``, ``ds_read_csv``); empty: every visible tool."""
    max_turns: int = 20
    """Model calls per task; still asking for tools after that is the ``max_turns`` outcome."""
    max_retries: int = 3
    """Model client retries of 429/5xx/connection errors (with backoff)."""
    max_workers: int = 1
    n_samples: int = 1
    number_of_tasks: int | None = None
    task_ids: list[str] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    request_timeout: float = 120.0
    task_timeout: float | None = None
    max_tool_output_chars: int = 8000
    """Tool output longer than this is cut in the prompt (the database keeps it whole)."""
    sandbox_server_url: str = "http://127.0.0.1:18890"
    sandbox_auto_start: bool = False
    sandbox_config_path: str | None = None
    sandbox_timeout: float = 120.0
    evaluate_results: bool = True
    evaluation_metric: str = "exact_match"
    evaluator_model_name: str | None = None
    evaluator_api_key: str | None = None
    evaluator_base_url: str | None = None
    evaluator_temperature: float = 0.0
    evaluator_max_retries: int = 3
    evaluator_extra_params: dict = dataclasses.field(default_factory=dict)
    pricing: dict = dataclasses.field(default_factory=dict)
    """Model → ``{prompt, completion, cached_prompt}`` in dollars per 1M tokens, over the
    shipped ``configs/pricing.json`` (see :mod:`agentflow.llm.pricing`); it only prices
    the run, so it is not part of the fingerprint."""
    save_results: bool = True
    save_trajectories: bool = True
    save_summary: bool = True
    trajectory_only: bool = False
    """Run the agent and store trajectories without scoring them."""
    parallel: bool | None = None
    """Accepted for AgentFlow compatibility; concurrency is set by ``max_workers``."""
    run_id: str | None = None
    resume: bool = False
    database_url: str | None = None
    claim_lease: float = 60.0
    """Seconds a process holds a claimed task sample without renewing it (it renews every
    third of that while it lives); a killed process's tasks are taken over after it."""
    max_attempts: int = 3
    """Tries of a task sample whose sandbox node is lost (code 1003 with
    ``data.node_lost``): each lost try is kept as an ``infra_error`` attempt and the task
    is retried at once on a fresh session, up to this many tries in all."""
    cache: str | None = None
    """The model-call cache: ``read_write``, ``read_only`` or ``off`` (see
    :mod:`agentflow.llm.cache`; default ``AGENTFLOW_MODEL_CACHE``, else ``read_write``).
    Not part of the fingerprint: a cached answer is the answer the model gave."""
    replay: str | None = None
    """A rollout run id whose recorded tool results answer this run's tool calls (see
    :mod:`agentflow.rollout.replay`)."""
    source: str | None = None
    """The file the config came from (not a config key)."""

    @property
    def metric(self) -> str:
        """The canonical metric name."""
        return METRIC_ALIASES[self.evaluation_metric.lower()]

    @property
    def scoring(self) -> bool:
        return self.evaluate_results and not self.trajectory_only

    def public_dict(self) -> dict:
        """The config as a dict with secrets masked (stored as the run's spec)."""
        out = dataclasses.asdict(self)
        for key in ("api_key", "evaluator_api_key"):
            if out.get(key):
                out[key] = "***"
        if out.get("database_url") and "@" in out["database_url"]:
            out["database_url"] = "***"
        return out


_FIELDS = {f.name: f for f in dataclasses.fields(RolloutConfig) if f.name != "source"}
_INT = {"max_turns": 1, "max_retries": 0, "max_workers": 1, "n_samples": 1, "number_of_tasks": 1,
        "max_tokens": 1, "max_tool_output_chars": 100, "evaluator_max_retries": 0, "max_attempts": 1}
_FLOAT = {"temperature": 0.0, "request_timeout": 0.001, "task_timeout": 0.001, "sandbox_timeout": 0.001,
          "evaluator_temperature": 0.0, "claim_lease": 1.0}
_BOOL = {"sandbox_auto_start", "evaluate_results", "save_results", "save_trajectories", "save_summary",
         "trajectory_only", "parallel", "resume"}
_STR = {"model_name", "api_key", "base_url", "benchmark_name", "data_path", "output_dir", "sandbox_server_url",
        "sandbox_config_path", "evaluation_metric", "evaluator_model_name", "evaluator_api_key",
        "evaluator_base_url", "run_id", "database_url", "replay"}
_URLS = ("base_url", "evaluator_base_url", "sandbox_server_url")


def load_config(config_path: str | os.PathLike | dict | None = None, **overrides: Any) -> RolloutConfig:
    """Load and validate a rollout config.

    Args:
        config_path: A JSON file (``${VAR}`` and ``${VAR:-default}`` are expanded), a
            dict of keys, or ``None`` to build from ``overrides`` alone.
        overrides: Keys that replace the file's; ``None`` values are ignored (so CLI
            flags that were not given change nothing).

    Returns:
        The validated :class:`RolloutConfig`.

    Raises:
        ConfigError: unreadable file, unknown key, wrong type or bad value; the message
            names the key and the value.
    """
    values, where, source = read_config(config_path, overrides, _FIELDS, "rollout config")
    cfg = RolloutConfig(source=source)
    for key, value in values.items():
        setattr(cfg, key, _coerce(key, value, where))
    _check(cfg, where)
    if cfg.cache is None:
        from ..llm.cache import default_mode

        cfg.cache = default_mode()
    return cfg


def _coerce(key: str, value: Any, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}'{key}' must be {expected}, got {value!r}")

    if value is None:
        return None
    if key in _BOOL:
        return as_bool(value, f"{where}'{key}'")
    if key in _INT:
        return as_int(value, f"{where}'{key}'", _INT[key])
    if key in _FLOAT:
        return as_float(value, f"{where}'{key}'", _FLOAT[key])
    if key in _STR:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if key == "system_prompt":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n".join(value)
        if isinstance(value, str):
            return value
        raise bad("a string or a list of strings")
    if key in ("available_tools", "task_ids"):
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
            return [str(v) for v in value]
        raise bad("a list of strings")
    if key == "evaluator_extra_params":
        if not isinstance(value, dict):
            raise bad("an object")
        return value
    if key == "cache":
        from ..llm.cache import check_mode

        return check_mode(value, where)
    if key == "pricing":
        from ..llm.pricing import parse_models

        parse_models(value, f"{where}'pricing'")  # a malformed price fails here, not at the end of the run
        return dict(value)
    raise AssertionError(key)  # every field is typed above


def _check(cfg: RolloutConfig, where: str) -> None:
    for key in _URLS:
        value = getattr(cfg, key)
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{where}'{key}' must be an http(s) URL, got {value!r}")
    if cfg.evaluation_metric.lower() not in METRIC_ALIASES:
        known = sorted({"exact_match", "f1", "f1_score", "contains_answer", "numeric_match", "llm_judge"})
        raise ConfigError(f"{where}'evaluation_metric' {cfg.evaluation_metric!r} is not a known metric; "
                          f"known: {', '.join(known)}")
    if cfg.replay is not None and not cfg.replay.strip():
        raise ConfigError(f"{where}'replay' must be a rollout run id, got {cfg.replay!r}")
    if cfg.replay is not None and cfg.replay == cfg.run_id:
        raise ConfigError(f"{where}'replay' names the run itself ({cfg.replay!r}); name the recorded run")
    if cfg.resume and not cfg.run_id:
        raise ConfigError(f"{where}'resume' needs 'run_id' (the run to continue)")
    if cfg.run_id is not None and (not cfg.run_id.strip() or len(cfg.run_id) > 200):
        raise ConfigError(f"{where}'run_id' must be 1-200 characters, got {cfg.run_id!r}")


def run_identity(cfg: RolloutConfig, dataset_sha256: str) -> dict:
    """What decides a run's outputs, and so its fingerprint: model, prompt, tools,
    sampling, dataset and scoring. Transport and pacing (URLs, keys, timeouts,
    retries, ``max_workers``, output paths, ``claim_lease``, ``max_attempts``) are left
    out, so changing them keeps the run resumable (and joinable)."""
    scoring = cfg.scoring
    return {
        "version": FINGERPRINT_VERSION,
        "model_name": cfg.model_name,
        "system_prompt": cfg.system_prompt,
        "available_tools": sorted(cfg.available_tools),
        "max_turns": cfg.max_turns,
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "n_samples": cfg.n_samples,
        "max_tool_output_chars": cfg.max_tool_output_chars,
        "dataset_sha256": dataset_sha256,
        "evaluation_metric": cfg.metric if scoring else None,
        "evaluator_model_name": (cfg.evaluator_model_name or cfg.model_name)
        if scoring and cfg.metric == "llm_judge" else None,
    }


def resolve_path(path: str, cfg: RolloutConfig | None = None) -> Path:
    """A data path of this config; see :func:`agentflow.runfiles.find_data_file`."""
    return find_data_file(path, cfg.source if cfg is not None else None)
