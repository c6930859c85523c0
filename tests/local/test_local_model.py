"""The embedded model served by ``agentflow model serve``, used through the real
``openai`` client: tool calls that are always valid, plain answers, errors."""
from __future__ import annotations

import json

import jsonschema
import pytest

from agentflow.localmodel.weights import DEFAULT_MODEL_NAME

from .conftest import needs_local_model

openai = pytest.importorskip("openai")

pytestmark = [pytest.mark.slow, needs_local_model]

MODEL = DEFAULT_MODEL_NAME  # what `agentflow model serve` answers to by default

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "city name"}},
                   "required": ["city"]}}}
SEARCH = {"type": "function", "function": {
    "name": "web-search", "description": "Search the web; query is a string or a list of strings.",
    "parameters": {"type": "object", "properties": {
        "query": {"type": ["string", "array"], "items": {"type": "string"}},
        "top_k": {"type": "integer"},
        "mode": {"type": "string", "enum": ["fast", "deep"]},
        "filters": {"type": "object", "properties": {"site": {"type": "string"}, "recent": {"type": "boolean"}}}},
        "required": ["query"]}}}


@pytest.fixture(scope="module")
def client(model_server):
    return openai.OpenAI(base_url=model_server.base_url, api_key="local", max_retries=0, timeout=120)


def test_models_endpoint_lists_the_model(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_tool_call_through_the_openai_client(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
        tools=[WEATHER], temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather" and call.id
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    assert args["city"].strip()
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

    # after the tool result the default policy (call-once) answers in text
    follow = client.chat.completions.create(model=MODEL, temperature=0, tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris right now?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"city": "Paris", "sky": "sunny", "celsius": 21}'}])
    assert not follow.choices[0].message.tool_calls
    assert follow.choices[0].message.content.strip()


def test_plain_answer_through_the_openai_client(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Answer in one short sentence."},
                               {"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=40)
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.content and choice.message.content.strip()
    assert not choice.message.tool_calls
    assert 0 < reply.usage.completion_tokens <= 40


def test_every_reply_is_a_valid_call_or_text(client):
    """Sampled hot, with a schema full of unions, enums and nesting: each reply is a call
    whose arguments fit the schema, or text that does not start like JSON."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, SEARCH)}
    prompts = ["Search the web for the newest Python release.", "Weather in Oslo and news about it?",
               "Look up 'heapq merge' with deep mode."]
    for i, prompt in enumerate(prompts):
        for choice_mode in ("auto", "required"):
            reply = client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], tools=[WEATHER, SEARCH],
                tool_choice=choice_mode, temperature=1.3, seed=100 + i, max_tokens=64)
            msg = reply.choices[0].message
            if msg.tool_calls:
                call = msg.tool_calls[0].function
                jsonschema.validate(json.loads(call.arguments), schemas[call.name])
            else:
                assert choice_mode == "auto" and not (msg.content or "").lstrip().startswith("{")


def test_named_tool_choice_and_none(client):
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], tools=[WEATHER, SEARCH], temperature=0,
        tool_choice={"type": "function", "function": {"name": "web-search"}})
    assert reply.choices[0].message.tool_calls[0].function.name == "web-search"
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Weather in Rome?"}], tools=[WEATHER], temperature=0,
        tool_choice="none", max_tokens=30)
    assert not reply.choices[0].message.tool_calls and reply.choices[0].message.content


def test_errors_through_the_openai_client(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert MODEL in str(err.value)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "word " * 9000}])
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], tools=[WEATHER],
                                       tool_choice={"type": "function", "function": {"name": "nope"}})


def test_rollout_machinery_uses_it_by_base_url(model_server):
    """agentflow's own model client (what rollout and synthesis use) talks to it unchanged."""
    from agentflow.llm import ChatModel

    model = ChatModel(MODEL, base_url=model_server.base_url, temperature=0)
    reply = model.chat([{"role": "user", "content": "Weather in Lima?"}], tools=[WEATHER])
    assert reply.tool_calls and reply.tool_calls[0].parse_arguments()["city"]
    health = model_server.health()
    assert health["stats"]["requests"] >= 1 and health["load_seconds"] > 0


def test_gemma_prompts_fold_the_system_turn_and_end_at_end_of_turn(monkeypatch):
    """Gemma 3 (no system role, no template in its GGUF) gets Gemma's turn format, and a
    constrained call under it is valid."""
    import importlib.metadata

    from agentflow.localmodel.engine import LocalModel
    from agentflow.localmodel.prompt import fold_system, render_messages
    from agentflow.localmodel.weights import find_gguf, local_model

    spec = local_model("gemma3-270m")
    try:
        importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{spec.distribution} is not installed")
    monkeypatch.delenv("AGENTFLOW_LOCAL_MODEL_PATH", raising=False)
    model = LocalModel(find_gguf(model=spec.key), name=spec.name, seed=0)
    assert (model.architecture, model.system_role, model.n_ctx) == ("gemma3", False, 8192)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Lima?"}]
    prompt = model._formatter(messages=fold_system(render_messages(messages, [WEATHER]))).prompt
    assert prompt.startswith("<start_of_turn>user\nBe brief.") and prompt.endswith("<start_of_turn>model\n")
    assert "system" not in prompt.split("\n")[0]
    done = model.complete(messages, tools=[WEATHER])
    assert done.finish_reason == "tool_calls"
    jsonschema.validate(json.loads(done.message["tool_calls"][0]["function"]["arguments"]),
                        WEATHER["function"]["parameters"])
