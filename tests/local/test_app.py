"""The OpenAI-compatible API with a scripted model: request validation, answers and errors
(no model weights needed)."""
from __future__ import annotations

import pytest

from agentflow.localmodel.app import create_app
from agentflow.localmodel.engine import Completion
from agentflow.localmodel.prompt import RequestError


class ScriptedModel:
    name = "tiny"

    def __init__(self):
        self.calls = []

    def describe(self):
        return {"model": self.name, "load_seconds": 0.0, "stats": {}}

    def complete(self, messages, **kw):
        self.calls.append((messages, kw))
        text = messages[-1]["content"]
        if text == "too long":
            raise RequestError("the prompt has 9000 tokens", param="messages", code="context_length_exceeded")
        if text == "crash":
            raise RuntimeError("secret detail")
        if kw.get("tools"):
            return Completion({"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                "tool_calls", 10, 5, 1.0, 1.0)
        return Completion({"role": "assistant", "content": "hi"}, "stop", 7, 2, 1.0, 1.0)


@pytest.fixture
def model():
    return ScriptedModel()


@pytest.fixture
def client(model):
    return create_app(model).test_client()


def chat(client, **body):
    body.setdefault("model", "tiny")
    body.setdefault("messages", [{"role": "user", "content": "hello"}])
    return client.post("/v1/chat/completions", json=body)


def test_models_and_health(client):
    assert client.get("/v1/models").get_json()["data"][0]["id"] == "tiny"
    assert client.get("/v1/models/tiny").get_json()["object"] == "model"
    assert client.get("/v1/models/other").status_code == 404
    assert client.get("/health").get_json()["status"] == "ok"


def test_chat_completion_shape_and_arguments(client, model):
    r = chat(client, temperature=0.2, max_completion_tokens=9, stop="END", seed=3, user="u1", logprobs=False)
    assert r.status_code == 200
    body = r.get_json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    assert body["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "hi"},
                                  "finish_reason": "stop", "logprobs": None}
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    kw = model.calls[-1][1]
    assert kw["temperature"] == 0.2 and kw["max_tokens"] == 9 and kw["stop"] == ["END"] and kw["seed"] == 3
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    call = chat(client, tools=tools, tool_choice="auto").get_json()["choices"][0]
    assert call["finish_reason"] == "tool_calls" and call["message"]["tool_calls"][0]["function"]["name"] == "f"
    assert client.post("/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "x"}]}
                       ).status_code == 200  # also without /v1


@pytest.mark.parametrize("body, param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "tiny"}, "messages"),
    ({"model": "tiny", "messages": []}, "messages"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stream": True}, "stream"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": 3}, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
])
def test_invalid_requests_are_400_naming_the_field(client, body, param):
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    err = r.get_json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param and err["message"]


def test_errors_are_openai_shaped(client):
    r = client.post("/v1/chat/completions", data="{not json", content_type="application/json")
    assert r.status_code == 400 and "JSON" in r.get_json()["error"]["message"]
    r = chat(client, model="gpt-9")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "model_not_found"
    r = chat(client, messages=[{"role": "user", "content": "too long"}])
    assert r.status_code == 400 and r.get_json()["error"]["code"] == "context_length_exceeded"
    r = chat(client, messages=[{"role": "user", "content": "crash"}])
    assert r.status_code == 500 and "secret" not in r.get_data(as_text=True)
    assert r.get_json()["error"]["type"] == "server_error"
    r = client.get("/v1/nowhere")
    assert r.status_code == 404 and r.get_json()["error"]["code"] == "unknown_url"
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and "error" in r.get_json()


def test_api_key_when_configured(model):
    client = create_app(model, api_key="k1").test_client()
    assert client.get("/health").status_code == 200
    r = client.get("/v1/models")
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer k1"}).status_code == 200


def test_request_too_large(model):
    client = create_app(model, max_request_bytes=100).test_client()
    r = chat(client, messages=[{"role": "user", "content": "x" * 500}])
    assert r.status_code == 413 and r.get_json()["error"]["code"] == "request_too_large"
