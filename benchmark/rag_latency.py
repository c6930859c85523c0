"""rag:search latency: index build time and search p50/p99, shipped and synthetic corpora.

Usage::

    python benchmark/rag_latency.py                 # shipped corpus + 100,000 synthetic passages
    python benchmark/rag_latency.py --passages 20000 --queries 300

The synthetic corpus draws ~120-word passages from the word distribution of the shipped
corpus (Python docs), so term statistics look like real text. Queries are the questions of
``benchmark/rag.jsonl`` plus keyword queries of 2-6 distinct words taken from random
passages (what a user remembers of a passage they look for).
Latency is measured in process at the tool layer (``RagBackend.search``), i.e. what one
``rag:search`` costs the server on top of its request handling.
"""
from __future__ import annotations

import argparse
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

from agentflow.tools.base import BackendContext, ToolContext  # noqa: E402
from agentflow.tools.rag import RagBackend  # noqa: E402

SHIPPED = REPO / "seeds" / "rag" / "corpus.jsonl"


def synthetic_corpus(path: Path, n: int, rng: random.Random) -> None:
    counts = collections.Counter()
    with open(SHIPPED, encoding="utf-8") as fh:
        for line in fh:
            counts.update(w.lower() for w in re.findall(r"[A-Za-z]+", json.loads(line)["text"]))
    words, weights = zip(*counts.most_common())
    cum = list(itertools.accumulate(weights))
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            title = " ".join(rng.choices(words, cum_weights=cum, k=4))
            length = rng.randint(60, 180)
            text = " ".join(rng.choices(words, cum_weights=cum, k=length))
            out.write(json.dumps({"id": f"syn-{i}", "title": title, "text": text}) + "\n")


def queries_for(corpus: Path, count: int, rng: random.Random) -> list[str]:
    questions = [json.loads(l)["question"] for l in open(REPO / "benchmark" / "rag.jsonl", encoding="utf-8")]
    lines = open(corpus, encoding="utf-8").read().splitlines()
    out = list(questions)
    while len(out) < count:
        words = sorted(set(re.findall(r"\w+", json.loads(rng.choice(lines))["text"])))
        if len(words) >= 6:
            out.append(" ".join(rng.sample(words, rng.randint(2, 6))))
    rng.shuffle(out)
    return out[:count]


def measure(corpus: Path, data_dir: Path, n_queries: int, top_k: int, rng: random.Random) -> dict:
    ctx_backend = BackendContext(data_dir=data_dir, roots=[], project_dir=REPO)
    started = time.perf_counter()
    backend = RagBackend({"corpus_path": str(corpus)}, ctx_backend)
    info = backend.ensure_warm()
    build = time.perf_counter() - started
    started = time.perf_counter()
    again = RagBackend({"corpus_path": str(corpus)}, ctx_backend)
    again.ensure_warm()
    cached = time.perf_counter() - started
    queries = queries_for(corpus, n_queries, rng)
    def ctx() -> ToolContext:
        return ToolContext(worker_id="bench", timeout=30, max_output_bytes=64 * 1024)

    for q in queries[:20]:  # warm the page cache
        backend.search(ctx(), query=q, top_k=top_k)
    times = []
    for q in queries:
        c = ctx()
        t = time.perf_counter()
        backend.search(c, query=q, top_k=top_k)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    pct = lambda p: round(times[min(len(times) - 1, int(p * len(times)))], 3)  # noqa: E731
    return {"corpus": str(corpus), "passages": info["passages"], "index_build_s": round(build, 2),
            "cached_warmup_s": round(cached, 3), "queries": len(times), "top_k": top_k,
            "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": round(times[-1], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workdir", help="keep the synthetic corpus here and reuse it (default: a temp dir)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(json.dumps({"shipped": measure(SHIPPED, tmp / "d1", args.queries, args.top_k, rng)}))
        work = Path(args.workdir) if args.workdir else tmp
        work.mkdir(parents=True, exist_ok=True)
        corpus = work / f"synthetic-{args.passages}-{args.seed}.jsonl"
        t = time.perf_counter()
        if not corpus.exists():
            synthetic_corpus(corpus, args.passages, random.Random(args.seed))
        print(f"# synthetic corpus of {args.passages} passages written in {time.perf_counter() - t:.1f} s "
              f"({corpus.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
        print(json.dumps({"synthetic": measure(corpus, tmp / "d2", args.queries, args.top_k, rng)}))


if __name__ == "__main__":
    main()
