"""Fixtures for the local model tests. Tests that need the model itself skip, saying
why, when the ``local`` extra (llama-cpp-python + the default model's weights package) is
not installed."""
from __future__ import annotations

import pytest

from agentflow.localmodel import unavailable_reason

LOCAL_MODEL_MISSING = unavailable_reason()
"""Why the local model cannot run here (``None`` when it can)."""

needs_local_model = pytest.mark.skipif(
    LOCAL_MODEL_MISSING is not None,
    reason=f"local model not installed: {LOCAL_MODEL_MISSING}",
)


@pytest.fixture(scope="module")
def model_server(tmp_path_factory):
    """``agentflow model serve`` on a free port, with a fixed seed, for the module."""
    from agentflow.localmodel import ModelServerProcess

    if LOCAL_MODEL_MISSING:
        pytest.skip(f"local model not installed: {LOCAL_MODEL_MISSING}")
    server = ModelServerProcess(extra_args=["--seed", "1"], log_dir=tmp_path_factory.mktemp("model-logs"))
    server.start(timeout=120)
    yield server
    server.stop()
