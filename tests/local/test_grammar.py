"""Schema simplification, JSON closing, prompt rendering and reply parsing (no model needed)."""
from __future__ import annotations

import json

import pytest

from agentflow.localmodel.grammar import bound_schema, call_schema, close_json
from agentflow.localmodel.prompt import RequestError, fold_system, parse_reply, render_messages

from .conftest import needs_local_model

TOOLS = [
    {"type": "function", "function": {"name": "rag-search", "description": "Search passages.",
                                      "parameters": {"type": "object", "properties": {
                                          "query": {"type": "string", "description": "what to look for"},
                                          "top_k": {"type": "integer"}}, "required": ["query"]}}},
    {"type": "function", "function": {"name": "stop_branch", "description": "End the branch.",
                                      "parameters": {"type": "object", "properties": {}}}},
]


def test_bound_schema_keeps_structure_and_drops_what_the_grammar_cannot_use():
    schema = {"type": "object", "properties": {
        "q": {"type": "string", "pattern": "^a+$", "format": "uri", "maxLength": 5},
        "urls": {"type": ["string", "array"], "items": {"type": "string"}},
        "mode": {"enum": ["fast", "slow", {"x": 1}]},
        "n": {"type": "integer", "minimum": 1},
        "opts": {"type": "object"},
        "ref": {"$ref": "#/definitions/x"}}, "required": ["q", "missing"]}
    out = bound_schema(schema)
    props = out["properties"]
    assert out["required"] == ["q"]
    assert props["q"] == {"type": "string", "minLength": 1}          # required text is non-empty
    assert props["urls"]["anyOf"][0] == {"type": "string"}
    assert props["urls"]["anyOf"][1]["maxItems"] == 6
    assert props["mode"] == {"enum": ["fast", "slow"]}
    assert props["n"] == {"type": "integer"}
    assert props["opts"] == {"type": "object", "properties": {}, "required": []}
    assert props["ref"] == {"type": "string"}


def test_call_schema_offers_each_tool_by_its_exact_name():
    schema = call_schema(TOOLS)
    names = [opt["properties"]["name"]["const"] for opt in schema["anyOf"]]
    assert names == ["rag-search", "stop_branch"]
    only = call_schema(TOOLS, only="stop_branch")
    assert only["properties"]["name"] == {"const": "stop_branch"}
    with pytest.raises(ValueError):
        call_schema(TOOLS, only="nope")


@pytest.mark.parametrize("prefix", [
    '{"name": "rag-search", "arguments": {"query": "heap',
    '{"name": "rag-search", "arguments": {"query": "a\\',
    '{"name": "rag-search", "arguments": {"query": "x", "top_k": 1',
    '{"name": "rag-search", "arguments": {"query": "x", "top_k"',
    '{"name": "x", "arguments": {"flag": tr',
    '{"name": "x", "arguments": {"items": ["a", "b", ',
    '{"name": "x", "arguments": {"v": 2.',
    '{"name": "x", "arguments": {"s": "\\u00',
])
def test_close_json_completes_every_cut_prefix_into_valid_json(prefix):
    closed = close_json(prefix)
    assert closed is not None
    value = json.loads(closed)
    assert value["name"] in ("rag-search", "x")
    assert isinstance(value["arguments"], dict)


def test_render_messages_turns_tool_turns_into_plain_chat():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Find heapq."}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "rag-search", "arguments": '{"query": "heapq"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "heapq: a min-heap"},
    ]
    out = render_messages(messages, TOOLS)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and "rag-search" in out[0]["content"]
    assert json.loads(out[2]["content"]) == {"name": "rag-search", "arguments": {"query": "heapq"}}
    assert out[3]["content"].startswith("Result of rag-search:")
    # the system text does not depend on the turn, so a conversation's prefix stays cached
    assert render_messages(messages[:2], TOOLS)[0] == out[0]


def test_fold_system_for_a_model_without_a_system_role():
    """Gemma has no system role: the system text opens the first user turn, and turns
    of one role in a row are joined so that roles alternate."""
    chat = render_messages([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Find heapq."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "rag-search", "arguments": '{"query": "heapq"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "heapq: a min-heap"},
        {"role": "system", "content": "Now answer."},
    ], TOOLS)
    out = fold_system(chat)
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.") and out[0]["content"].endswith("Find heapq.")
    assert "rag-search" in out[0]["content"]
    assert out[2]["content"].startswith("Result of rag-search:")
    assert out[2]["content"].endswith("(instruction) Now answer.")
    assert fold_system([{"role": "system", "content": "S"}]) == [{"role": "user", "content": "S"}]
    assert fold_system(chat[1:2]) == chat[1:2]


@pytest.mark.parametrize("messages", [
    [{"role": "robot", "content": "x"}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
    [{"role": "assistant", "content": "only me"}],
    ["not a message"],
])
def test_render_messages_rejects_what_it_cannot_serve(messages):
    with pytest.raises(RequestError):
        render_messages(messages, None)


def test_parse_reply_makes_a_tool_call_or_text():
    call = parse_reply('{"name": "rag-search", "arguments": {"query": "a\nb"}}', tools_offered=True)
    fn = call["tool_calls"][0]["function"]
    assert call["content"] is None and fn["name"] == "rag-search"
    assert json.loads(fn["arguments"]) == {"query": "a\nb"}      # a raw newline is re-escaped
    assert parse_reply("  Paris.  ", tools_offered=True) == {"role": "assistant", "content": "Paris."}
    assert parse_reply('{"name": "x"}', tools_offered=False)["content"] == '{"name": "x"}'


@needs_local_model
def test_reply_grammar_is_accepted_by_llama_cpp():
    from agentflow.localmodel.grammar import reply_grammar

    for mode in ("auto", "required", "text"):
        gbnf = reply_grammar(TOOLS, mode)
        assert gbnf.startswith("root ::= ")
    assert reply_grammar(TOOLS, "none") is None
    assert "af-text" not in reply_grammar(TOOLS, "required")
