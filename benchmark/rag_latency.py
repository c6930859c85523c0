"""rag:search latency: index build time and search p50/p99, shipped and synthetic corpora.

Usage::

    python benchmark/rag_latency.py                      # shipped corpus + 100,000 synthetic passages
    python benchmark/rag_latency.py --model iid          # worst case: words drawn independently
    python benchmark/rag_latency.py --passages 20000 --queries 300

Synthetic corpora (``--model``):

- ``zipf`` (default): text shaped like a real large corpus. A 200,000-word vocabulary
  with Zipf frequencies (its 60 most frequent words are English function words), and
  topical passages: half of each passage's words come from one of 1,000 topics of 300
  words, half from the background distribution. Titles are topic words.
- ``iid``: every word drawn independently from the word frequencies of the shipped corpus
  (a 6,000-word vocabulary). Common words then occur in most passages, so this is the
  worst case for BM25 in FTS5, which scores every passage a query word occurs in.

Queries: the questions of ``benchmark/rag.jsonl`` (shipped corpus) or keyword queries of
2-6 distinct words taken from random passages (what a user remembers of a passage).
Latency is measured in process at the tool layer (``RagBackend.search``): what one
``rag:search`` costs the server on top of its request handling.
"""
from __future__ import annotations

import argparse
import bisect
import collections
import itertools
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agentflow.tools._fts import STOPWORDS  # noqa: E402
from agentflow.tools.base import BackendContext, ToolContext  # noqa: E402
from agentflow.tools.rag import RagBackend  # noqa: E402

SHIPPED = REPO / "seeds" / "rag" / "corpus.jsonl"
_SYLLABLES = [c + v for c in "bdfghklmnprstvz" for v in "aeiou"] + ["qu", "th", "ch", "sh", "ly", "ro"]


def _pseudo_word(i: int) -> str:
    out = []
    i += 1
    while i:
        i, r = divmod(i, len(_SYLLABLES))
        out.append(_SYLLABLES[r])
    return "".join(out) + ("n" if len(out) < 2 else "")


def zipf_corpus(path: Path, n: int, rng: random.Random, vocab: int = 200_000, topics: int = 1000) -> None:
    function_words = sorted(STOPWORDS) + ["not", "all", "one", "more", "other", "also", "only", "new", "two",
                                          "first", "after", "most", "over", "some"]
    words = function_words + [_pseudo_word(i) for i in range(vocab - len(function_words))]
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(vocab)))
    content_cum = list(itertools.accumulate(1.0 / (r + 1) ** 0.8 for r in range(200, vocab)))
    topic_words = [[words[200 + bisect.bisect(content_cum, rng.random() * content_cum[-1])] for _ in range(300)]
                   for _ in range(topics)]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            topic = topic_words[rng.randrange(topics)]
            length = rng.randint(60, 180)
            background = rng.choices(words, cum_weights=cum, k=length // 2)
            text = background + rng.choices(topic, k=length - len(background))
            rng.shuffle(text)
            title = " ".join(rng.choices(topic, k=rng.randint(2, 5)))
            out.write(json.dumps({"id": f"syn-{i}", "title": title, "text": " ".join(text)}) + "\n")


def iid_corpus(path: Path, n: int, rng: random.Random) -> None:
    counts = collections.Counter()
    with open(SHIPPED, encoding="utf-8") as fh:
        for line in fh:
            counts.update(w.lower() for w in re.findall(r"[A-Za-z]+", json.loads(line)["text"]))
    words, weights = zip(*counts.most_common())
    cum = list(itertools.accumulate(weights))
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            title = " ".join(rng.choices(words, cum_weights=cum, k=4))
            text = " ".join(rng.choices(words, cum_weights=cum, k=rng.randint(60, 180)))
            out.write(json.dumps({"id": f"syn-{i}", "title": title, "text": text}) + "\n")


def queries_for(corpus: Path, count: int, rng: random.Random, questions: bool) -> list[str]:
    if questions:
        out = [json.loads(line)["question"] for line in open(REPO / "benchmark" / "rag.jsonl", encoding="utf-8")]
        return (out * (count // len(out) + 1))[:count]
    lines = open(corpus, encoding="utf-8").read().splitlines()
    out = []
    while len(out) < count:
        words = sorted(set(re.findall(r"\w+", json.loads(rng.choice(lines))["text"])))
        if len(words) >= 6:
            out.append(" ".join(rng.sample(words, rng.randint(2, 6))))
    return out


def measure(corpus: Path, data_dir: Path, n_queries: int, top_k: int, rng: random.Random, questions: bool) -> dict:
    ctx_backend = BackendContext(data_dir=data_dir, roots=[], project_dir=REPO)
    started = time.perf_counter()
    backend = RagBackend({"corpus_path": str(corpus)}, ctx_backend)
    info = backend.ensure_warm()
    build = time.perf_counter() - started
    started = time.perf_counter()
    RagBackend({"corpus_path": str(corpus)}, ctx_backend).ensure_warm()
    cached = time.perf_counter() - started
    queries = queries_for(corpus, n_queries, rng, questions)

    def ctx() -> ToolContext:
        return ToolContext(worker_id="bench", timeout=30, max_output_bytes=64 * 1024)

    for q in queries[:50]:  # warm the page cache and the stem cache
        backend.search(ctx(), query=q, top_k=top_k)
    times = []
    for q in queries:
        c = ctx()
        t = time.perf_counter()
        backend.search(c, query=q, top_k=top_k)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()

    def pct(p: float) -> float:
        return round(times[min(len(times) - 1, int(p * len(times)))], 3)

    return {"corpus": corpus.name, "passages": info["passages"], "index_build_s": round(build, 2),
            "cached_warmup_s": round(cached, 3), "queries": len(times), "top_k": top_k,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": round(times[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", choices=["zipf", "iid"], default="zipf", help="synthetic corpus model")
    parser.add_argument("--workdir", help="keep the synthetic corpus here and reuse it (default: a temp dir)")
    parser.add_argument("--skip-shipped", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_shipped:
            print(json.dumps({"shipped": measure(SHIPPED, tmp / "d1", args.queries, args.top_k, rng, True)}))
        work = Path(args.workdir) if args.workdir else tmp
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / f"synthetic-{args.model}-{args.passages}-{args.seed}.jsonl"
        if not corpus.exists():
            t = time.perf_counter()
            (zipf_corpus if args.model == "zipf" else iid_corpus)(corpus, args.passages, random.Random(args.seed))
            print(f"# {args.model} corpus of {args.passages} passages written in {time.perf_counter() - t:.1f} s "
                  f"({corpus.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
        print(json.dumps({f"synthetic-{args.model}": measure(corpus, tmp / "d2", args.queries, args.top_k, rng,
                                                             False)}))


if __name__ == "__main__":
    main()
