"""AgentFlow: a sandbox server, rollout and synthesis for tool-using LLM agents.

The top-level names are imported on first use, so ``import agentflow`` stays cheap
(the server never pays for the rollout or synthesis imports).
"""
from __future__ import annotations

import importlib

from .version import __version__

__all__ = ["Sandbox", "__version__", "quick_rollout", "rollout", "synthesize"]

_LAZY = {
    "Sandbox": "agentflow.sandbox",
    "rollout": "agentflow.rollout",
    "quick_rollout": "agentflow.rollout",
    "synthesize": "agentflow.synthesis",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agentflow' has no attribute {name!r}")
