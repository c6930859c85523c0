"""The model-call cache on a real sqlite file (migrated by Alembic) with the real
``openai`` client on the scripted model: what the key holds, the three modes, and two
equal calls at once."""
from __future__ import annotations

import itertools
import threading

import pytest

from agentflow.db import upgrade
from agentflow.llm import ChatModel
from agentflow.llm.cache import CachedChatModel, ModelCache, ModelCacheMiss, check_mode, request_key
from tests.support.fake_openai import FakeOpenAI, call, tool_calls

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def db_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'cache.db'}"
    upgrade(url)
    return url


def _counter_script():
    counter = itertools.count()
    lock = threading.Lock()

    def script(req):
        with lock:
            return f"answer {next(counter)}"

    return script


def test_the_key_is_the_request_not_its_timing_and_the_scope_separates_samples():
    body = {"model": "m", "messages": MSG, "temperature": 0.5}
    assert request_key("http://h/v1/", body) == request_key("http://h/v1", {**body, "timeout": 3})
    assert request_key("http://h/v1", dict(reversed(list(body.items())))) == request_key("http://h/v1", body)
    others = [request_key("http://h/v1", {**body, "temperature": 0.7}), request_key("http://other/v1", body),
              request_key("http://h/v1", {**body, "seed": 1}), request_key("http://h/v1", {**body, "model": "n"}),
              request_key("http://h/v1", body, {"sample": 1}),
              request_key("http://h/v1", {**body, "tools": [{"type": "function", "function": {"name": "x"}}]})]
    assert len({request_key("http://h/v1", body), *others}) == 7


def test_read_write_then_read_only_then_off(db_url):
    with FakeOpenAI(_counter_script()) as fake:
        cache = ModelCache.open(db_url, "read_write", run_id="r1")
        model = CachedChatModel(ChatModel("m", base_url=fake.base_url), cache)
        first = model.chat(MSG)
        again = model.chat(MSG, timeout=5)  # another timeout: the same call
        sample1 = model.scoped(sample=1).chat(MSG)
        assert len(fake.requests) == 2 and again.cache_hit and not first.cache_hit
        assert (first.content, again.content, sample1.content) == ("answer 0", "answer 0", "answer 1")
        assert again.usage == first.usage  # what the provider reported, kept
        cache.close()
        ro = CachedChatModel(ChatModel("m", base_url=fake.base_url), ModelCache.open(db_url, "read_only"))
        assert ro.chat(MSG).content == "answer 0"
        with pytest.raises(ModelCacheMiss, match=r"read_only and holds no answer for this call: model 'm' at "
                                                 r".*, sample 2, 1 messages, last user: 'hi'"):
            ro.scoped(sample=2).chat(MSG)
        assert len(fake.requests) == 2
        off = CachedChatModel(ChatModel("m", base_url=fake.base_url), ModelCache.open(db_url, "off"))
        assert off.chat(MSG).content == "answer 2" and len(fake.requests) == 3
        assert cache.counts == {"calls": 3, "hits": 1, "misses": 2, "stored": 2}


def test_tool_calls_come_back_as_they_were(db_url):
    with FakeOpenAI([tool_calls(call("bash-run", {"command": "ls"}, id="c7"), content="look")]) as fake:
        model = CachedChatModel(ChatModel("m", base_url=fake.base_url), ModelCache.open(db_url, "read_write"))
        first = model.chat(MSG)
        hit = model.chat(MSG)
    assert hit.cache_hit and hit.to_message() == first.to_message()
    assert hit.tool_calls[0].parse_arguments() == {"command": "ls"} and hit.tool_calls[0].id == "c7"


def test_two_equal_calls_at_once_both_get_the_stored_answer(db_url):
    barrier = threading.Barrier(2)

    def script(req):
        barrier.wait(30)  # both requests are in flight before either answer is stored
        return f"answer {threading.get_ident()}"

    with FakeOpenAI(script) as fake:
        cache = ModelCache.open(db_url, "read_write")
        model = CachedChatModel(ChatModel("m", base_url=fake.base_url), cache)
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(model.chat(MSG))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(fake.requests) == 2 and len(replies) == 2
        stored = model.chat(MSG)
    assert stored.cache_hit and {r.content for r in replies} == {stored.content}  # both agree with the cache
    assert not any(r.cache_hit for r in replies)  # and both were paid


def test_cache_modes_are_checked():
    assert check_mode("read-write") == "read_write" and check_mode("OFF") == "off"
    with pytest.raises(Exception, match=r"'cache' must be one of read_write, read_only, off, got 'rw'"):
        check_mode("rw")
