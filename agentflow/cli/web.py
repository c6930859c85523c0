"""``agentflow web build-store``: regenerate the offline page store of the web backend."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("web", help="offline web store tools")
    websub = parser.add_subparsers(dest="web_command", metavar="ACTION")
    websub.required = True
    build = websub.add_parser(
        "build-store",
        help="write the shipped offline pages (Python module docs under docs.python.org URLs)",
        description="Render standard-library module documentation as HTML pages stored under their "
                    "canonical https://docs.python.org/3/library/... URLs, plus manifest.jsonl. "
                    "This regenerates seeds/web/.",
    )
    build.add_argument("output", help="store folder (e.g. seeds/web)")
    build.set_defaults(func=_build_store)


def _build_store(args: argparse.Namespace) -> int:
    from ..tools._pydocs import python_doc_pages
    from ..tools.web.store import page_file

    out = Path(args.output)
    entries = []
    for page in python_doc_pages():
        rel = page_file(page["url"])
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page["html"], encoding="utf-8")
        entries.append({"url": page["url"], "title": page["title"], "file": rel})
    manifest = out / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries), encoding="utf-8")
    print(f"wrote {len(entries)} pages and {manifest}")
    return 0
