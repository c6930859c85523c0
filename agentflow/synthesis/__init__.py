"""Synthesis: explore the sandbox tools from seeds and write verified multi-hop QA data.

Usage::

    from agentflow.synthesis import synthesize, load_config, load_seeds

    report = synthesize("configs/synthesis/rag.json", max_workers=4)
    print(report["qa"]["accepted"], report["qa_file"])

See SPEC §7 and the README's synthesis section. Every node, path and QA candidate is
stored in the ``synthesis_*`` tables as it is made, so a run can be resumed and queried.
"""
from __future__ import annotations

import logging

from .config import SynthesisConfig as SynthesisConfig
from .config import load_config as load_config
from .qa import check_qa as check_qa
from .qa import normalize_text as normalize_text
from .runner import FingerprintMismatch as FingerprintMismatch
from .runner import SynthesisError as SynthesisError
from .runner import synthesize as synthesize
from .sampler import ActionRegistry as ActionRegistry
from .sampler import action_key as action_key
from .seeds import Seed as Seed
from .seeds import SeedsError as SeedsError
from .seeds import load_seeds as load_seeds
from .selection import select_paths as select_paths
from .store import export_run as export_run

__all__ = [
    "ActionRegistry",
    "FingerprintMismatch",
    "Seed",
    "SeedsError",
    "SynthesisConfig",
    "SynthesisError",
    "action_key",
    "check_qa",
    "export_run",
    "load_config",
    "load_seeds",
    "normalize_text",
    "select_paths",
    "synthesize",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
