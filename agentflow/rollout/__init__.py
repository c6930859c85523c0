"""Rollout: run an agent over a benchmark, score it, and keep every step in SQL.

Usage::

    from agentflow.rollout import rollout

    summary = rollout("configs/rollout/rag.json", max_workers=4)
    print(summary["accuracy"], summary["results_file"])

See SPEC §6 and the README's rollout section.
"""
from __future__ import annotations

import logging
import sys
import types

from .agent import AgentResult as AgentResult
from .agent import extract_answer as extract_answer
from .config import RolloutConfig as RolloutConfig
from .config import load_config as load_config
from .metrics import normalize_answer as normalize_answer
from .metrics import pass_at_k as pass_at_k
from .metrics import score_prediction as score_prediction
from .runner import FingerprintMismatch as FingerprintMismatch
from .runner import RolloutError as RolloutError
from .runner import pipeline as pipeline
from .runner import quick_rollout as quick_rollout
from .runner import rollout as rollout
from .store import export_run as export_run
from .tasks import Task as Task
from .tasks import load_tasks as load_tasks

__all__ = [
    "AgentResult",
    "FingerprintMismatch",
    "RolloutConfig",
    "RolloutError",
    "Task",
    "export_run",
    "extract_answer",
    "load_config",
    "load_tasks",
    "normalize_answer",
    "pass_at_k",
    "pipeline",
    "quick_rollout",
    "rollout",
    "score_prediction",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())


class _CallableModule(types.ModuleType):
    """``agentflow.rollout`` names both this package and its main function. Importing
    the package makes ``agentflow.rollout`` the package, so calling the package runs
    the function: ``from agentflow import rollout; rollout("cfg.json")`` always works."""

    def __call__(self, *args, **kwargs):
        return rollout(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
