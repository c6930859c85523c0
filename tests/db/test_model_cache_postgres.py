"""The model-call cache on PostgreSQL: served, refused in read_only, and two equal calls
at once (the primary-key conflict) agree with the stored answer."""
from __future__ import annotations

import threading

import pytest
from alembic import command

from agentflow.db.engine import alembic_config, upgrade
from agentflow.llm import ChatModel
from agentflow.llm.cache import CachedChatModel, ModelCache, ModelCacheMiss
from tests.support.fake_openai import FakeOpenAI

MSG = [{"role": "user", "content": "hi from postgres"}]


def test_the_model_cache_on_postgres(postgres_url):
    upgrade(postgres_url)
    barrier = threading.Barrier(2)

    def script(req):
        barrier.wait(30)
        return f"answer {threading.get_ident()}"

    with FakeOpenAI(script) as fake:
        cache = ModelCache.open(postgres_url, "read_write", run_id="pg-run")
        model = CachedChatModel(ChatModel("m", base_url=fake.base_url), cache)
        replies = []
        threads = [threading.Thread(target=lambda: replies.append(model.chat(MSG))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        stored = model.chat(MSG)
        assert len(fake.requests) == 2 and stored.cache_hit and {r.content for r in replies} == {stored.content}
        read_only = CachedChatModel(ChatModel("m", base_url=fake.base_url), ModelCache.open(postgres_url, "read_only"))
        assert read_only.chat(MSG).content == stored.content
        with pytest.raises(ModelCacheMiss):
            read_only.scoped(sample=1).chat(MSG)
        assert len(fake.requests) == 2
    cache.close()
    read_only.cache.close()
    command.downgrade(alembic_config(postgres_url), "0011_synthesis_qa_attempts")  # 0012 goes down and up again
    upgrade(postgres_url)
