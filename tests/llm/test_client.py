"""ChatModel against the scripted fake OpenAI server: replies, tool calls, error translation."""
from __future__ import annotations

import pytest

from agentflow.llm import (
    ChatModel,
    LLMAuthError,
    LLMBadRequestError,
    LLMConnectionError,
    LLMRateLimitError,
    LLMServerError,
    LLMTimeoutError,
    ToolCallRequest,
)
from tests.support.fake_openai import FakeOpenAI, Reply, call, fail_first, http_error, tool_calls
from tests.support.server import free_port

MSG = [{"role": "user", "content": "hi"}]


def test_text_reply_with_usage_and_defaults_sent():
    with FakeOpenAI("hello") as fake:
        model = ChatModel("m1", base_url=fake.base_url, temperature=0.2, max_tokens=50)
        reply = model.chat(MSG)
    assert reply.content == "hello" and reply.tool_calls == [] and reply.finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
    body = fake.requests[0]
    assert body["model"] == "m1" and body["temperature"] == 0.2 and body["max_tokens"] == 50
    assert reply.to_message() == {"role": "assistant", "content": "hello"}


def test_several_tool_calls_keep_raw_arguments():
    script = [tool_calls(call("bash-run", {"command": "ls"}, id="a"), call("nope", "{not json", id="b"))]
    with FakeOpenAI(script) as fake:
        reply = ChatModel("m", base_url=fake.base_url).chat(MSG, tools=[{"type": "function", "function": {
            "name": "bash-run", "parameters": {"type": "object", "properties": {}}}}], tool_choice="auto")
    assert [c.name for c in reply.tool_calls] == ["bash-run", "nope"]
    assert reply.tool_calls[0].parse_arguments() == {"command": "ls"}
    with pytest.raises(ValueError, match="not valid JSON"):
        reply.tool_calls[1].parse_arguments()
    assert reply.finish_reason == "tool_calls"
    assert reply.to_message()["tool_calls"][1]["function"]["arguments"] == "{not json"
    assert fake.requests[0]["tool_choice"] == "auto"


def test_the_request_arrives_as_built_with_fields_openai_does_not_name():
    """A whole conversation (an assistant tool call, its result, unicode) reaches the
    endpoint unchanged, and a field of a local server (vLLM's ``top_k``) is sent, not
    refused."""
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "say h\u00e9llo \u2603"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "echo", "arguments": '{"v": 1}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"v": 1}'},
    ]
    with FakeOpenAI("done") as fake:
        model = ChatModel("m", base_url=fake.base_url, extra_params={"top_k": 20})
        reply = model.chat(conversation, repetition_penalty=1.1, timeout=5)
    assert reply.content == "done"
    body = fake.requests[0]
    assert body["messages"] == conversation
    assert body["top_k"] == 20 and body["repetition_penalty"] == 1.1
    assert "timeout" not in body  # transport, not a request field


def test_parse_arguments_rejects_non_objects_and_accepts_empty():
    assert ToolCallRequest("i", "t", "").parse_arguments() == {}
    with pytest.raises(ValueError, match="JSON object"):
        ToolCallRequest("i", "t", "[1, 2]").parse_arguments()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_transient_errors_are_retried_by_the_openai_client(status):
    with FakeOpenAI(fail_first(2, status, "ok")) as fake:
        reply = ChatModel("m", base_url=fake.base_url, max_retries=3).chat(MSG)
    assert reply.content == "ok" and len(fake.requests) == 3


@pytest.mark.parametrize("status,error,retryable", [
    (429, LLMRateLimitError, True), (500, LLMServerError, True), (401, LLMAuthError, True),
    (400, LLMBadRequestError, False), (404, LLMBadRequestError, False)])
def test_errors_are_translated(status, error, retryable):
    with FakeOpenAI(http_error(status, "scripted failure")) as fake:
        with pytest.raises(error) as info:
            ChatModel("m", base_url=fake.base_url, max_retries=1).chat(MSG)
    assert info.value.status == status and info.value.retryable is retryable
    assert "scripted failure" in str(info.value)


def test_connection_refused_and_timeout():
    with pytest.raises(LLMConnectionError) as info:
        ChatModel("m", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0).chat(MSG)
    assert info.value.retryable
    with FakeOpenAI([Reply(content="late", latency=1.0)]) as fake:
        with pytest.raises(LLMTimeoutError):
            ChatModel("m", base_url=fake.base_url, max_retries=0, timeout=0.2).chat(MSG)


def test_models_share_one_http_client_and_keep_their_own_endpoints(monkeypatch):
    from agentflow.llm import client as client_mod

    with FakeOpenAI("from a") as fa, FakeOpenAI("from b") as fb:
        a, b = ChatModel("ma", base_url=fa.base_url), ChatModel("mb", base_url=fb.base_url, timeout=5)
        assert a._client._client is b._client._client  # one pool and TLS context per process
        assert (a.chat(MSG).content, b.chat(MSG).content) == ("from a", "from b")
    assert [r["model"] for r in fa.requests + fb.requests] == ["ma", "mb"]
    shared = client_mod._shared_http_client()
    monkeypatch.setattr(client_mod.os, "getpid", lambda: -1)  # as in a forked child
    assert client_mod._shared_http_client() is not shared
