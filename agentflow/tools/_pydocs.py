"""Real text that ships with every Python: the shipped rag corpus and web pages.

``python_doc_passages()`` splits the language-reference topics of ``pydoc_data.topics``
and the docstrings of a fixed list of standard-library modules into passages
(``seeds/rag/corpus.jsonl``). ``python_doc_pages()`` renders module documentation as
HTML pages stored under their canonical ``https://docs.python.org/3/library/…`` URLs
(``seeds/web/``). Both are deterministic for one Python version, so the shipped files
can be regenerated with ``agentflow rag build-corpus --python-docs`` and
``agentflow web build-store``.
"""
from __future__ import annotations

import html
import importlib
import inspect
import re
import warnings
from typing import Iterator

__all__ = [
    "CORPUS_MODULES",
    "PAGE_MODULES",
    "module_page",
    "python_doc_pages",
    "python_doc_passages",
    "split_passages",
]

# Standard-library modules with substantial documentation in their docstrings.
CORPUS_MODULES = [
    "abc", "argparse", "ast", "asyncio", "base64", "bdb", "binascii", "bisect", "bz2",
    "calendar", "cmd", "codecs", "collections", "colorsys", "concurrent.futures",
    "configparser", "contextlib", "copy", "copyreg", "csv", "dataclasses", "datetime",
    "decimal", "difflib", "dis", "doctest", "email", "email.message", "email.utils",
    "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools",
    "getopt", "gettext", "glob", "graphlib", "gzip", "hashlib", "heapq", "hmac", "html",
    "html.parser", "http", "http.client", "http.cookies", "http.server", "imaplib",
    "importlib", "inspect", "io", "ipaddress", "itertools", "json", "json.decoder",
    "json.encoder", "keyword", "linecache", "locale", "logging", "logging.handlers",
    "lzma", "mailbox", "math", "mimetypes", "modulefinder", "netrc", "numbers",
    "operator", "optparse", "os", "os.path", "pathlib", "pdb", "pickle", "pickletools",
    "pkgutil", "platform", "plistlib", "poplib", "pprint", "profile", "pstats",
    "py_compile", "queue", "quopri", "random", "re", "reprlib", "rlcompleter", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket",
    "socketserver", "sqlite3", "stat", "statistics", "string", "struct", "subprocess",
    "symtable", "sys", "sysconfig", "tabnanny", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "token", "tokenize", "trace", "traceback", "tracemalloc",
    "types", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings",
    "wave", "weakref", "webbrowser", "xml.dom.minidom", "xml.etree.ElementTree",
    "zipapp", "zipfile", "zipimport", "zlib", "zoneinfo",
]

# Modules rendered as pages of the offline web store (each has a long module docstring).
PAGE_MODULES = [
    "argparse", "base64", "bisect", "calendar", "cmd", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "difflib", "doctest", "fnmatch",
    "fractions", "functools", "getopt", "gettext", "glob", "graphlib", "gzip", "hashlib",
    "heapq", "hmac", "http.client", "inspect", "ipaddress", "json", "logging", "mailbox",
    "optparse", "os", "pickle", "pprint", "random", "re", "sched", "secrets", "shelve",
    "shlex", "shutil", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "timeit", "tokenize", "trace", "unittest", "urllib.parse",
    "uuid", "zipfile",
]

_UNDERLINE = re.compile(r"^([*=\-^~\"])\1{2,}$")
_MAX_PASSAGE = 1200


def split_passages(text: str, max_chars: int = _MAX_PASSAGE) -> list[str]:
    """Split text at blank lines into passages of at most about ``max_chars``.

    Paragraphs are kept whole where they fit; a longer paragraph is cut at line ends.
    """
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", text) if p.strip()]
    pieces: list[str] = []
    for para in paragraphs:
        while len(para) > max_chars:
            cut = para.rfind("\n", 0, max_chars)
            if cut < max_chars // 3:
                cut = para.rfind(" ", 0, max_chars)
            if cut <= 0:
                cut = max_chars
            pieces.append(para[:cut].rstrip())
            para = para[cut:].lstrip("\n ")
        if para.strip():
            pieces.append(para)
    out: list[str] = []
    buf = ""
    for piece in pieces:
        if buf and len(buf) + len(piece) + 2 > max_chars:
            out.append(buf)
            buf = piece
        else:
            buf = f"{buf}\n\n{piece}" if buf else piece
    if buf:
        out.append(buf)
    return out


def _topic_sections(text: str) -> Iterator[tuple[str, str]]:
    """Split a pydoc topic into (section title, body) at underlined headings."""
    lines = text.splitlines()
    title, body = "", []
    i = 0
    while i < len(lines):
        if i + 1 < len(lines) and lines[i].strip() and _UNDERLINE.match(lines[i + 1].strip()) \
                and len(lines[i + 1].strip()) >= len(lines[i].strip()) - 2:
            if body and "".join(body).strip():
                yield title, "\n".join(body)
            title, body = lines[i].strip(), []
            i += 2
            continue
        body.append(lines[i])
        i += 1
    if "".join(body).strip():
        yield title, "\n".join(body)


def _topic_passages() -> Iterator[dict]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        sections = list(_topic_sections(topics[key]))
        top = sections[0][0] if sections and sections[0][0] else key
        n = 0
        for section, body in sections:
            title = top if section in ("", top) else f"{top} — {section}"
            for passage in split_passages(body):
                yield {"id": f"topic:{key}#{n}", "title": title, "text": passage}
                n += 1


def _import(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module missing on this build is skipped
            return None


def _public_members(module) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    members = []
    for name in sorted(set(names)):
        obj = getattr(module, name, None)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        owner = getattr(obj, "__module__", None) or ""
        if owner.lstrip("_") != module.__name__.lstrip("_") and not owner.startswith(module.__name__) \
                and owner not in ("builtins", "_" + module.__name__):
            if getattr(module, "__all__", None) is None:
                continue
        if inspect.getdoc(obj):
            members.append((name, obj))
    return members


def _methods(cls) -> list[tuple[str, object]]:
    """Public methods defined (not inherited) by ``cls`` with a docstring of their own."""
    out = []
    for meth, func in sorted(vars(cls).items()):
        if meth.startswith("_") or not callable(func) or not getattr(func, "__doc__", None):
            continue
        if isinstance(func, (staticmethod, classmethod)):
            func = func.__func__
        if inspect.isroutine(func) and func.__doc__:
            out.append((meth, func))
    return out


def _signature(obj) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r" at 0x[0-9a-fA-F]+", "", sig)  # object addresses would change on every run


def _module_passages(name: str) -> Iterator[dict]:
    module = _import(name)
    if module is None:
        return
    doc = inspect.getdoc(module) or ""
    n = 0
    if doc.strip():
        for passage in split_passages(doc):
            yield {"id": f"module:{name}#{n}", "title": f"{name} module", "text": passage}
            n += 1
    for member, obj in _public_members(module):
        text = inspect.getdoc(obj) or ""
        kind = "class" if inspect.isclass(obj) else "function"
        head = f"{name}.{member}{_signature(obj)}"
        for i, passage in enumerate(split_passages(text)):
            body = f"{head}\n\n{passage}" if i == 0 else passage
            yield {"id": f"module:{name}.{member}#{i}", "title": f"{name}.{member} ({kind})", "text": body}
        if inspect.isclass(obj):
            for meth, func in _methods(obj):
                head = f"{name}.{member}.{meth}{_signature(func)}"
                for i, passage in enumerate(split_passages(inspect.getdoc(func) or "")):
                    body = f"{head}\n\n{passage}" if i == 0 else passage
                    yield {"id": f"module:{name}.{member}.{meth}#{i}",
                           "title": f"{name}.{member}.{meth} (method)", "text": body}


def python_doc_passages(modules: list[str] | None = None) -> Iterator[dict]:
    """Passages ``{id, title, text}`` of the language reference and module docs."""
    yield from _topic_passages()
    seen: set[str] = set()
    for name in modules or CORPUS_MODULES:
        for passage in _module_passages(name):
            if passage["id"] in seen:
                continue
            seen.add(passage["id"])
            yield passage


def _paragraphs_html(text: str) -> str:
    out = []
    for block in re.split(r"\n\s*\n", text.strip("\n")):
        if not block.strip():
            continue
        lines = block.splitlines()
        code = any(line.startswith((" ", "\t", ">>>")) or "   " in line.strip() for line in lines)
        if code:
            out.append(f"<pre>{html.escape(block)}</pre>")
        else:
            out.append(f"<p>{html.escape(' '.join(line.strip() for line in lines))}</p>")
    return "\n".join(out)


def _summary_line(doc: str, limit: int = 80) -> str:
    """First sentence of a docstring's first paragraph, cut at a word near ``limit``."""
    para = " ".join(doc.strip().split("\n\n", 1)[0].split())
    sentence = re.split(r"(?<=[.!?])\s(?=[A-Z])", para, maxsplit=1)[0].rstrip(".")
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " …"
    return sentence


def module_page(name: str, version: str) -> dict | None:
    """Render one module's documentation as an HTML page.

    Returns:
        ``{url, title, html}`` or None when the module cannot be imported here.
    """
    module = _import(name)
    if module is None:
        return None
    doc = inspect.getdoc(module) or ""
    summary = _summary_line(doc)
    heading = f"{name} — {summary}" if summary else name
    title = f"{heading} — Python {version} documentation"
    url = f"https://docs.python.org/3/library/{name}.html"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f'<link rel="canonical" href="{url}">',
        "<style>body{font-family:sans-serif} pre{background:#eef}</style>",
        "<script>document.documentElement.classList.add('js');</script>",
        "</head><body>",
        '<header><a href="https://docs.python.org/3/">Python documentation</a></header>',
        '<nav aria-label="breadcrumb"><a href="https://docs.python.org/3/library/index.html">'
        "The Python Standard Library</a> » " + html.escape(name) + "</nav>",
        "<main>",
        f'<h1 id="module-{html.escape(name)}">{html.escape(heading)}</h1>',
        _paragraphs_html(doc),
    ]
    for member, obj in _public_members(module):
        kind = "class" if inspect.isclass(obj) else "function"
        anchor = f"{name}.{member}"
        parts.append(f'<section id="{html.escape(anchor)}">')
        parts.append(f"<h2>{kind} {html.escape(anchor + _signature(obj))}</h2>")
        parts.append(_paragraphs_html(inspect.getdoc(obj) or ""))
        parts.append("</section>")
    parts += [
        "</main>",
        f'<footer>© Python Software Foundation. Generated from the docstrings of Python {version}.</footer>',
        "</body></html>",
    ]
    return {"url": url, "title": title, "html": "\n".join(parts) + "\n"}


def python_doc_pages(modules: list[str] | None = None) -> Iterator[dict]:
    """HTML pages ``{url, title, html}`` of the standard-library module docs."""
    import sys

    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    for name in modules or PAGE_MODULES:
        page = module_page(name, version)
        if page is not None:
            yield page
