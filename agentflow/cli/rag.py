"""``agentflow rag build-corpus|search``: make a passage corpus and try it out."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("rag", help="retrieval corpus tools")
    ragsub = parser.add_subparsers(dest="rag_command", metavar="ACTION")
    ragsub.required = True

    build = ragsub.add_parser(
        "build-corpus",
        help="make a JSONL corpus from a folder of .txt/.md/.html files (or from the Python docs)",
        description="Split documents into passages and write them as JSONL {id, title, text}. "
                    "With --python-docs, regenerate the shipped corpus (seeds/rag/corpus.jsonl) from "
                    "pydoc_data.topics and standard-library docstrings.",
    )
    build.add_argument("folder", nargs="?", help="folder of .txt, .md and .html files")
    build.add_argument("-o", "--output", required=True, help="JSONL file to write")
    build.add_argument("--python-docs", action="store_true",
                       help="use the Python language reference and module docs instead of a folder")
    build.add_argument("--max-chars", type=int, default=1200, help="passage size (default 1200)")
    build.set_defaults(func=_build_corpus)

    search = ragsub.add_parser("search", help="search a corpus from the command line (builds its index)")
    search.add_argument("query")
    search.add_argument("--corpus", help="JSONL corpus (default: the shipped one)")
    search.add_argument("-k", "--top-k", type=int, default=5)
    search.add_argument("--data-dir", default=".agentflow", help="where the index is cached")
    search.set_defaults(func=_search)


def _build_corpus(args: argparse.Namespace) -> int:
    from . import CommandError
    from ..tools._corpus import folder_passages, write_corpus
    from ..tools._pydocs import python_doc_passages

    if args.python_docs == bool(args.folder):
        raise CommandError("give either a FOLDER or --python-docs")
    if args.python_docs:
        passages = python_doc_passages()
    else:
        folder = Path(args.folder)
        if not folder.is_dir():
            raise CommandError(f"{folder} is not a directory")
        passages = folder_passages(folder, args.max_chars)
    count = write_corpus(passages, Path(args.output))
    if count == 0:
        raise CommandError("no passages found (supported files: .txt .md .markdown .html .htm)")
    print(f"wrote {count} passages to {args.output}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from ..tools.base import BackendContext, ToolContext
    from ..tools.rag import RagBackend

    config = {"corpus_path": str(Path(args.corpus).resolve())} if args.corpus else {}
    backend = RagBackend(config, BackendContext(data_dir=Path(args.data_dir).resolve(), roots=[]))
    started = time.perf_counter()
    info = backend.ensure_warm()
    print(f"index ready in {time.perf_counter() - started:.2f} s: {info}", file=sys.stderr)
    ctx = ToolContext(worker_id="cli", timeout=30, max_output_bytes=1 << 20)
    result = backend.search(ctx, query=args.query, top_k=args.top_k)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
