"""Seeds and config loading: clear errors naming the line or key; AgentFlow compatibility."""
from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.config import ConfigError
from agentflow.synthesis import SeedsError, load_config, load_seeds
from tests.fixtures import REFERENCE_ROOTS, root_id
from tests.support.server import REPO


def test_seeds_from_file_strings_and_dicts(tmp_path):
    f = tmp_path / "s.jsonl"
    f.write_text('{"content": "a", "kwargs": {"db_id": "retail"}}\n\n{"content": "b", "id": 7}')  # no final newline
    seeds = load_seeds(f)
    assert [s.content for s in seeds] == ["a", "b"] and seeds[0].kwargs == {"db_id": "retail"}
    assert seeds[1].metadata == {"id": 7}
    assert [s.content for s in load_seeds(["x", {"content": "y"}])] == ["x", "y"]
    j = tmp_path / "s.json"
    j.write_text('[{"content": "c"}, "d"]')
    assert [s.content for s in load_seeds(j)] == ["c", "d"]


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("  \n\n", "is empty"),
    ('{"content": "ok"}\n{"content": "broken"\n', "line 2: not valid JSON"),
    ('{"content": "ok"}\n{"kwargs": {}}\n', "line 2: the seed has no 'content' (its keys: kwargs)"),
    ('{"content": ""}\n', "line 1: 'content' must be a non-empty string"),
    ('{"content": "a", "kwargs": [1]}\n', "line 1: 'kwargs' must be an object"),
    ('[1, 2]\n', "a seed must be a JSON object"),
])
def test_bad_seeds_files_name_the_line(tmp_path, text, message):
    f = tmp_path / "seeds.jsonl"
    f.write_text(text)
    with pytest.raises(SeedsError) as err:
        load_seeds(f)
    assert message in str(err.value) and "seeds.jsonl" in str(err.value)


def test_bad_seed_lists_and_missing_files(tmp_path):
    with pytest.raises(SeedsError, match="not found"):
        load_seeds(tmp_path / "nope.jsonl")
    with pytest.raises(SeedsError, match="empty"):
        load_seeds([])
    with pytest.raises(SeedsError, match=r"seed \[1\]: the seed has no 'content'"):
        load_seeds(["a", {"text": "b"}])


def test_shipped_seeds_load():
    for domain in ("rag", "web", "text2sql", "doc", "ds"):
        assert load_seeds(REPO / "seeds" / domain / "seeds.jsonl")


def test_config_errors_name_the_key(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"'max_dept' \(did you mean 'max_depth'\?\)"):
        load_config({"max_dept": 3})
    with pytest.raises(ConfigError, match="'branching_factor' must be an integer >= 1"):
        load_config({"branching_factor": 0})
    with pytest.raises(ConfigError, match="'path_similarity_threshold' must be a number in"):
        load_config({"path_similarity_threshold": 3})
    with pytest.raises(ConfigError, match="min_depth"):
        load_config({"min_depth": 5, "max_depth": 3})
    with pytest.raises(ConfigError, match="'resume' needs 'run_id'"):
        load_config({"resume": True})
    f = tmp_path / "c.json"
    f.write_text('{"model_name": "${SYNTH_TEST_MODEL}", "api_key": "${SYNTH_TEST_KEY:-none}"}')
    monkeypatch.delenv("SYNTH_TEST_MODEL", raising=False)
    with pytest.raises(ConfigError, match=r"c.json: 'model_name' uses \$\{SYNTH_TEST_MODEL\}"):
        load_config(f)
    monkeypatch.setenv("SYNTH_TEST_MODEL", "m1")
    cfg = load_config(f, max_workers=3)
    assert (cfg.model_name, cfg.api_key, cfg.max_workers) == ("m1", "none", 3)
    assert cfg.public_dict()["api_key"] == "***"


def test_tree_shape_rule():
    cfg = load_config({"max_depth": 4, "branching_factor": 3, "depth_threshold": 2})
    assert [cfg.children_wanted(d) for d in range(6)] == [3, 3, 1, 1, 0, 0]


def test_shipped_configs_load(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    names = sorted(p.stem for p in (REPO / "configs" / "synthesis").glob("*.json"))
    assert {"rag", "text2sql", "ds", "doc", "web", "bash"} <= set(names)
    for name in names:
        cfg = load_config(REPO / "configs" / "synthesis" / f"{name}.json")
        assert cfg.model_name and cfg.available_tools and cfg.seeds_file
        assert load_seeds(REPO / cfg.seeds_file)


@pytest.mark.parametrize("REFERENCE", REFERENCE_ROOTS, ids=root_id)
def test_reference_configs_load_or_fail_clearly(monkeypatch, REFERENCE):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    for path in sorted((REFERENCE / "configs" / "synthesis").glob("*.json")):
        with pytest.raises(ConfigError) as err:  # every reference file uses an unset ${VAR}
            load_config(path)
        assert path.name in str(err.value) and "environment variable" in str(err.value)
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    monkeypatch.setenv("OPENAI_API_URL", "https://example.invalid/v1")
    monkeypatch.setenv("OPENROUTER_API_KEY", "k")
    loaded = {p.stem: load_config(p) for p in sorted((REFERENCE / "configs" / "synthesis").glob("*.json"))}
    assert loaded["text2sql_config"].available_tools[0] == "text2sql:list_databases"  # sql:* alias
    assert loaded["text2sql_config"].resource_types == ["text2sql"]
    assert loaded["rag_config"].resource_init_configs == {"rag": {"content": {"top_k": 10}}}
    assert loaded["doc_config"].max_depth == 20 and loaded["web_config"].max_selected_traj == 2


@pytest.mark.parametrize("REFERENCE", REFERENCE_ROOTS, ids=root_id)
def test_reference_seeds_load(REFERENCE):
    paths = sorted((REFERENCE / "seeds").glob("*/seeds.jsonl"))
    assert paths
    for path in paths:
        assert load_seeds(path), path


@pytest.mark.parametrize("value,needle", [
    ("soon", "'claim_lease' must be a number, got 'soon'"),
    (False, "'claim_lease' must be a number, got False"),
    (0, "'claim_lease' must be a number >= 1, got 0"),
    (-2, "'claim_lease' must be a number >= 1, got -2"),
    (None, "'claim_lease' must be a value (null is not allowed here)"),
])
def test_bad_claim_lease_is_named(value, needle):
    with pytest.raises(ConfigError) as info:
        load_config({"claim_lease": value})
    assert needle in str(info.value)
    assert load_config({}).claim_lease == 60.0 and load_config({"claim_lease": 2}).claim_lease == 2.0
