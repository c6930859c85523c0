"""The public names of SPEC §1 import as documented, and every ``__all__`` name exists."""
from __future__ import annotations

import importlib
import inspect

import pytest

PACKAGES = ["agentflow", "agentflow.sandbox", "agentflow.rollout", "agentflow.synthesis", "agentflow.llm",
            "agentflow.tools", "agentflow.db", "agentflow.server", "agentflow.config", "agentflow.runfiles",
            "agentflow.view", "agentflow.mcp", "agentflow.db.claims", "agentflow.runtime.cluster"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_exists(name):
    module = importlib.import_module(name)
    for attr in getattr(module, "__all__", []):
        assert getattr(module, attr) is not None, f"{name}.{attr}"


def test_top_level_reexports_are_callables_whatever_was_imported_first():
    import agentflow
    import agentflow.rollout  # noqa: F401  (makes agentflow.rollout the package)
    from agentflow import Sandbox, quick_rollout, rollout, synthesize

    assert callable(rollout) and callable(quick_rollout) and callable(synthesize)
    assert inspect.isclass(Sandbox) and agentflow.Sandbox is Sandbox
    assert "config_path" in inspect.signature(agentflow.rollout.rollout).parameters


def test_documented_import_paths():
    from agentflow.rollout import load_config, load_tasks, pipeline, quick_rollout, rollout  # noqa: F401
    from agentflow.sandbox import Sandbox  # noqa: F401
    from agentflow.sandbox.client import HTTPClientConfig, HTTPServiceClient  # noqa: F401
    from agentflow.synthesis import load_config as synth_load_config, load_seeds, synthesize  # noqa: F401


def test_sync_methods_have_async_twins():
    from agentflow.sandbox import Sandbox

    for name, member in inspect.getmembers(Sandbox, inspect.isfunction):
        if name.endswith("_sync") and not name.startswith("_"):
            twin = getattr(Sandbox, name[: -len("_sync")])
            assert inspect.iscoroutinefunction(twin), name
            assert list(inspect.signature(twin).parameters) == list(inspect.signature(member).parameters), name
