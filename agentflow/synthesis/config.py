"""Synthesis configuration: loading, validation and the run fingerprint.

The keys are those of AgentFlow's ``configs/synthesis/*.json`` (including the ones its
files carry for their own launcher: ``number_of_seed``, ``resource_types``,
``resource_init_configs``, ``sandbox_auto_start``, ``sandbox_config_path``,
``sandbox_timeout``, ``target_qa_count``) plus ``max_workers``, ``run_id``, ``resume``
and a few knobs of our own (model sampling, QA check limits, ``database_url``,
``claim_lease`` for runs that several processes work on). Keys
starting with ``_`` are comments. An unknown key, or a value of the wrong type, is a
:class:`~agentflow.config.ConfigError` that names it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..config import RESOURCE_ALIASES, ConfigError, as_bool, as_float, as_int, read_config
from ..runfiles import find_data_file, fingerprint

__all__ = ["FINGERPRINT_VERSION", "SynthesisConfig", "fingerprint", "load_config", "resolve_path", "run_identity"]

FINGERPRINT_VERSION = 1
"""Version of :func:`run_identity`; bump it when the identity's contents change."""


@dataclasses.dataclass
class SynthesisConfig:
    """Everything a synthesis run needs. Build it with :func:`load_config`."""

    model_name: str = ""
    api_key: str | None = None
    base_url: str | None = None
    # --- the tree (SPEC §7.1)
    max_depth: int = 5
    """Longest path (actions from the root)."""
    branching_factor: int = 2
    """Children of a node while its depth is below ``depth_threshold``."""
    depth_threshold: int = 2
    """From this depth on, every node gets one child (chains)."""
    # --- selection (§7.2)
    min_depth: int = 2
    """Paths shorter than this are not considered."""
    max_selected_traj: int = 2
    """Paths chosen per seed."""
    path_similarity_threshold: float = 0.7
    """A path more similar than this to an already chosen one is skipped."""
    # --- prompts
    available_tools: list[str] = dataclasses.field(default_factory=list)
    """Tool names or wildcards (``rag:*``, ``web-search``, ``ds_read_csv``); empty: every visible tool."""
    seed_description: str = "Starting point of the exploration"
    sampling_tips: list[str] = dataclasses.field(default_factory=list)
    synthesis_tips: list[str] = dataclasses.field(default_factory=list)
    qa_examples: list[dict] = dataclasses.field(default_factory=list)
    # --- data and outputs
    seeds_file: str | None = None
    number_of_seed: int | None = None
    """Use only the first N seeds (``null``: all)."""
    target_qa_count: int | None = None
    """Start no new seed once this many QA pairs are accepted."""
    output_dir: str | None = None
    # --- sandbox
    sandbox_server_url: str = "http://127.0.0.1:18890"
    sandbox_auto_start: bool = False
    sandbox_config_path: str | None = None
    sandbox_timeout: float = 120.0
    resource_types: list[str] = dataclasses.field(default_factory=list)
    """Resources to open a session of for each seed (AgentFlow keys; ``sql`` means ``text2sql``)."""
    resource_init_configs: dict = dataclasses.field(default_factory=dict)
    """``{resource: {"content": {session config}}}`` for ``resource_types``."""
    pricing: dict = dataclasses.field(default_factory=dict)
    """Model → ``{prompt, completion, cached_prompt}`` in dollars per 1M tokens over the
    shipped table (see :mod:`agentflow.llm.pricing`); prices the run only, not in the
    fingerprint."""
    # --- model
    temperature: float | None = 0.7
    max_tokens: int | None = None
    request_timeout: float = 120.0
    max_retries: int = 3
    # --- run
    max_workers: int = 1
    """Seeds explored at once (siblings of a seed also expand concurrently)."""
    max_expansions_per_seed: int = 4
    """Model calls in flight at once inside one seed's tree."""
    run_id: str | None = None
    resume: bool = False
    database_url: str | None = None
    claim_lease: float = 60.0
    """Seconds a process holds a claimed seed without renewing it (it renews every third
    of that while it lives); a killed process's seeds are taken over after it."""
    # --- exploration and QA details
    max_action_retries: int = 2
    """Re-asks after a refused proposal (duplicate, unknown tool, bad JSON) before the
    expansion is recorded as ``failed``."""
    max_observation_chars: int = 4000
    """Observation text shown to the model per step (the database keeps it whole)."""
    min_hops: int = 2
    """Reasoning steps (and path depth) a QA needs."""
    min_question_chars: int = 10
    max_question_chars: int = 800
    max_answer_chars: int = 300
    min_answer_support: float = 0.8
    """Share of the answer's words that must appear in the path's observations."""
    question_similarity_threshold: float = 0.85
    """A question this similar to an accepted one of the run is a near-duplicate."""
    contamination: dict | None = None
    """``{"benchmarks": [files], "ngram": 8, "threshold": 0.5}``: reject a question whose
    n-gram overlap with those benchmarks' questions exceeds the threshold
    (``overlaps_benchmark``; see :mod:`agentflow.synthesis.contamination`). ``None``: off."""
    cache: str | None = None
    """The model-call cache: ``read_write``, ``read_only`` or ``off`` (see
    :mod:`agentflow.llm.cache`; default ``AGENTFLOW_MODEL_CACHE``, else ``read_write``)."""
    source: str | None = None
    """The file the config came from (not a config key)."""

    def public_dict(self) -> dict:
        """The config as a dict with secrets masked (stored as the run's spec)."""
        out = dataclasses.asdict(self)
        if out.get("api_key"):
            out["api_key"] = "***"
        if out.get("database_url") and "@" in out["database_url"]:
            out["database_url"] = "***"
        return out

    def children_wanted(self, depth: int) -> int:
        """How many children a node at ``depth`` gets (0 at ``max_depth``)."""
        if depth >= self.max_depth:
            return 0
        return self.branching_factor if depth < self.depth_threshold else 1


_FIELDS = {f.name: f for f in dataclasses.fields(SynthesisConfig) if f.name != "source"}
_INT = {"max_depth": 1, "branching_factor": 1, "depth_threshold": 0, "min_depth": 1, "max_selected_traj": 1,
        "number_of_seed": 1, "target_qa_count": 1, "max_tokens": 1, "max_retries": 0, "max_workers": 1,
        "max_expansions_per_seed": 1, "max_action_retries": 0, "max_observation_chars": 100, "min_hops": 1,
        "min_question_chars": 1, "max_question_chars": 10, "max_answer_chars": 1}
_FLOAT = {"path_similarity_threshold": (0.0, 1.0), "temperature": (0.0, 2.0), "request_timeout": (0.001, None),
          "sandbox_timeout": (0.001, None), "min_answer_support": (0.0, 1.0), "claim_lease": (1.0, None),
          "question_similarity_threshold": (0.0, 1.0)}
_BOOL = {"sandbox_auto_start", "resume"}
_STR = {"model_name", "api_key", "base_url", "seed_description", "seeds_file", "output_dir", "sandbox_server_url",
        "sandbox_config_path", "run_id", "database_url"}
_STR_LIST = {"available_tools", "sampling_tips", "synthesis_tips", "resource_types"}
_URLS = ("base_url", "sandbox_server_url")
_NULLABLE = {"contamination", "api_key", "base_url", "seeds_file", "number_of_seed", "target_qa_count", "output_dir",
             "sandbox_config_path", "temperature", "max_tokens", "run_id", "database_url"}


def load_config(config_path: str | os.PathLike | dict | None = None, **overrides: Any) -> SynthesisConfig:
    """Load and validate a synthesis config.

    Args:
        config_path: A JSON file (``${VAR}`` and ``${VAR:-default}`` are expanded), a
            dict of keys, or ``None`` to build from ``overrides`` alone.
        overrides: Keys that replace the file's; ``None`` values are ignored.

    Returns:
        The validated :class:`SynthesisConfig`.

    Raises:
        ConfigError: unreadable file, unset ``${VAR}``, unknown key, wrong type or bad
            value; the message names the file and the key.

    Usage::

        cfg = load_config("configs/synthesis/rag.json", max_workers=4)
    """
    values, where, source = read_config(config_path, overrides, _FIELDS, "synthesis config")
    cfg = SynthesisConfig(source=source)
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
        if key in _NULLABLE:
            return None
        field = _FIELDS[key]
        if field.default_factory is not dataclasses.MISSING:  # null list/object: empty
            return field.default_factory()
        raise bad("a value (null is not allowed here)")
    if key in _BOOL:
        return as_bool(value, f"{where}'{key}'")
    if key in _INT:
        return as_int(value, f"{where}'{key}'", _INT[key])
    if key in _FLOAT:
        return as_float(value, f"{where}'{key}'", *_FLOAT[key])
    if key in _STR:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if key in _STR_LIST:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad("a list of strings")
        if key == "available_tools":
            return [_tool_alias(v) for v in value]
        return [v for v in value if v.strip()]
    if key == "qa_examples":
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise bad("a list of {question, answer} objects")
        for i, example in enumerate(value):
            if not isinstance(example.get("question"), str) or "answer" not in example:
                raise ConfigError(f"{where}'qa_examples[{i}]' needs a 'question' string and an 'answer'")
        return value
    if key == "resource_init_configs":
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise bad("an object of {resource: {content: {...}}}")
        return value
    if key == "contamination":
        from .contamination import parse_contamination

        return parse_contamination(value, where)
    if key == "cache":
        from ..llm.cache import check_mode

        return check_mode(value, where)
    if key == "pricing":
        from ..llm.pricing import parse_models

        parse_models(value, f"{where}'pricing'")  # a malformed price fails at load, not in the report
        return dict(value)
    raise AssertionError(key)  # every field is typed above


def _tool_alias(name: str) -> str:
    """``sql:execute`` → ``text2sql:execute`` (AgentFlow's resource names, see
    :data:`agentflow.config.RESOURCE_ALIASES`); other spellings are kept."""
    for sep in (":", "-", "_", "."):
        prefix, found, rest = name.partition(sep)
        if found and prefix.lower() in RESOURCE_ALIASES:
            return f"{RESOURCE_ALIASES[prefix.lower()]}:{rest}"
    return name


def _check(cfg: SynthesisConfig, where: str) -> None:
    for key in _URLS:
        value = getattr(cfg, key)
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{where}'{key}' must be an http(s) URL, got {value!r}")
    if cfg.min_depth > cfg.max_depth:
        raise ConfigError(f"{where}'min_depth' ({cfg.min_depth}) is larger than 'max_depth' ({cfg.max_depth}): "
                          f"no path could be selected")
    if cfg.depth_threshold > cfg.max_depth:
        raise ConfigError(f"{where}'depth_threshold' ({cfg.depth_threshold}) is larger than "
                          f"'max_depth' ({cfg.max_depth})")
    if cfg.branching_factor ** min(cfg.depth_threshold, cfg.max_depth) > 4096:
        raise ConfigError(f"{where}branching_factor ** depth_threshold = "
                          f"{cfg.branching_factor ** cfg.depth_threshold} leaves per seed is too many (max 4096)")
    if cfg.resume and not cfg.run_id:
        raise ConfigError(f"{where}'resume' needs 'run_id' (the run to continue)")
    if cfg.run_id is not None and (not cfg.run_id.strip() or len(cfg.run_id) > 200):
        raise ConfigError(f"{where}'run_id' must be 1-200 characters, got {cfg.run_id!r}")
    cfg.resource_types = [RESOURCE_ALIASES.get(r, r) for r in cfg.resource_types]


def run_identity(cfg: SynthesisConfig, seeds_sha256: str) -> dict:
    """What decides a run's outputs, and so its fingerprint: model, tree shape,
    selection, prompts, QA checks and the seeds. Transport and pacing (URLs, keys,
    timeouts, retries, ``max_workers``, output paths, ``target_qa_count``) are left out,
    so changing them keeps the run resumable."""
    return {
        "version": FINGERPRINT_VERSION,
        "model_name": cfg.model_name,
        "temperature": cfg.temperature,
        "max_tokens": cfg.max_tokens,
        "tree": [cfg.max_depth, cfg.branching_factor, cfg.depth_threshold],
        "selection": [cfg.min_depth, cfg.max_selected_traj, cfg.path_similarity_threshold],
        "available_tools": sorted(cfg.available_tools),
        "prompts": [cfg.seed_description, cfg.sampling_tips, cfg.synthesis_tips, cfg.qa_examples],
        "exploration": [cfg.max_action_retries, cfg.max_observation_chars, cfg.resource_types],
        "checks": [cfg.min_hops, cfg.min_question_chars, cfg.max_question_chars, cfg.max_answer_chars,
                   cfg.min_answer_support, cfg.question_similarity_threshold],
        "seeds_sha256": seeds_sha256,
    }


def resolve_path(path: str, cfg: SynthesisConfig | None = None) -> Path:
    """A data path of this config; see :func:`agentflow.runfiles.find_data_file`."""
    return find_data_file(path, cfg.source if cfg is not None else None)
