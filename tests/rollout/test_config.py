"""Rollout config loading: AgentFlow's reference configs, validation, fingerprint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.config import ConfigError
from agentflow.rollout import load_config
from agentflow.rollout.config import fingerprint, run_identity
from tests.fixtures import file_id, reference_files

REFERENCE_FILES = reference_files("configs/infer/*.json", "configs/trajectory/*.json")
SHIPPED = sorted((Path(__file__).resolve().parents[2] / "configs" / "rollout").glob("*.json"))


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=file_id)
def test_reference_configs_load_or_name_the_bad_key(path, monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENROUTER_API_KEY", "OPENAI_API_URL"):
        monkeypatch.delenv(var, raising=False)
    raw = json.loads(path.read_text())
    try:
        cfg = load_config(path)
    except ConfigError as err:
        # Placeholders like "VLLM_URL" or an unset ${VAR} must be named in the message.
        bad = [k for k, v in raw.items() if isinstance(v, str) and (str(v) in str(err) or "${" in v)]
        assert bad and any(k in str(err) for k in bad), str(err)
        return
    assert cfg.model_name == raw["model_name"]
    assert cfg.available_tools == raw["available_tools"]


@pytest.mark.parametrize("path", REFERENCE_FILES, ids=file_id)
def test_reference_configs_load_with_real_values(path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or")
    monkeypatch.setenv("OPENAI_API_URL", "http://127.0.0.1:9/v1")
    raw = json.loads(path.read_text())
    overrides = {} if str(raw["base_url"]).startswith(("http", "$")) else {"base_url": "http://127.0.0.1:9/v1"}
    if "evaluator_base_url" in raw:
        overrides["evaluator_base_url"] = "http://127.0.0.1:9/v1"
    cfg = load_config(path, **overrides)
    assert cfg.system_prompt.startswith("You are")
    assert cfg.metric in ("f1", "exact_match", "contains_answer", "llm_judge")


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_rollout_configs_load(path):
    cfg = load_config(path)
    assert cfg.data_path and cfg.available_tools


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"model_name": "m", "max_turn": 3}))
    with pytest.raises(ConfigError, match=r"'max_turn' \(did you mean 'max_turns'\?\)"):
        load_config(p)


@pytest.mark.parametrize("key,value,needle", [
    ("max_turns", 0, "'max_turns' must be an integer >= 1"),
    ("max_workers", "many", "'max_workers' must be an integer"),
    ("evaluate_results", "perhaps", "'evaluate_results' must be true or false"),
    ("evaluation_metric", "bleu", "'evaluation_metric' 'bleu' is not a known metric"),
    ("base_url", "VLLM_URL", "'base_url' must be an http(s) URL, got 'VLLM_URL'"),
    ("system_prompt", 5, "'system_prompt' must be a string or a list of strings"),
])
def test_bad_values_are_named(key, value, needle):
    with pytest.raises(ConfigError) as info:
        load_config({"model_name": "m", key: value})
    assert needle in str(info.value)


def test_env_expansion_comments_prompt_list_and_aliases(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-1")
    monkeypatch.delenv("UNSET_VAR", raising=False)
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"_comment": "x", "model_name": "m", "api_key": "${MY_KEY}",
                             "base_url": "${UNSET_VAR:-http://h/v1}", "system_prompt": ["a", "", "b"],
                             "evaluation_metric": "f1_score", "available_tools": "rag:*", "parallel": False}))
    cfg = load_config(p, max_workers=4, run_id=None)
    assert (cfg.api_key, cfg.base_url, cfg.system_prompt) == ("sk-1", "http://h/v1", "a\n\nb")
    assert cfg.metric == "f1" and cfg.available_tools == ["rag:*"] and cfg.max_workers == 4
    p.write_text(json.dumps({"model_name": "m", "api_key": "${UNSET_VAR}"}))
    with pytest.raises(ConfigError, match="'api_key' uses \\$\\{UNSET_VAR\\}"):
        load_config(p)
    with pytest.raises(ConfigError, match="'resume' needs 'run_id'"):
        load_config({"model_name": "m", "resume": True})


def test_fingerprint_ignores_transport_but_not_the_experiment():
    base = load_config({"model_name": "m", "system_prompt": "p"})
    fp = fingerprint(run_identity(base, "d"))
    same = load_config({"model_name": "m", "system_prompt": "p", "max_workers": 8, "request_timeout": 5,
                        "sandbox_timeout": 9, "base_url": "http://other/v1", "api_key": "k", "output_dir": "o"})
    assert fingerprint(run_identity(same, "d")) == fp
    assert fingerprint(run_identity(base, "other-dataset")) != fp
    for change in ({"system_prompt": "q"}, {"model_name": "m2"}, {"max_turns": 3}, {"temperature": 0.5}):
        assert fingerprint(run_identity(load_config({"model_name": "m", "system_prompt": "p", **change}), "d")) != fp
    assert "***" == base.__class__(model_name="m", api_key="secret").public_dict()["api_key"]


@pytest.mark.parametrize("key,value,needle", [
    ("claim_lease", "soon", "'claim_lease' must be a number, got 'soon'"),
    ("claim_lease", True, "'claim_lease' must be a number, got True"),
    ("claim_lease", 0, "'claim_lease' must be a number >= 1, got 0"),
    ("claim_lease", -5, "'claim_lease' must be a number >= 1, got -5"),
    ("max_attempts", "twice", "'max_attempts' must be an integer, got 'twice'"),
    ("max_attempts", 2.5, "'max_attempts' must be an integer, got 2.5"),
    ("max_attempts", 0, "'max_attempts' must be an integer >= 1, got 0"),
    ("max_attempts", -1, "'max_attempts' must be an integer >= 1, got -1"),
])
def test_bad_claim_lease_and_max_attempts_are_named(key, value, needle):
    with pytest.raises(ConfigError) as info:
        load_config({"model_name": "m", key: value})
    assert needle in str(info.value)


def test_claim_lease_and_max_attempts_defaults_and_not_in_the_fingerprint():
    base = load_config({"model_name": "m"})
    assert (base.claim_lease, base.max_attempts) == (60.0, 3)
    other = load_config({"model_name": "m", "claim_lease": "2", "max_attempts": 5})
    assert (other.claim_lease, other.max_attempts) == (2.0, 5)
    # pacing, not the experiment: processes with other leases may join one run
    assert fingerprint(run_identity(other, "d")) == fingerprint(run_identity(base, "d"))


def test_a_bad_claim_lease_in_a_file_names_the_file(tmp_path):
    p = tmp_path / "join.json"
    p.write_text(json.dumps({"model_name": "m", "claim_lease": 0.5}))
    with pytest.raises(ConfigError, match=r"join.json: 'claim_lease' must be a number >= 1, got 0.5"):
        load_config(p)
