"""A BM25 passage index in sqlite FTS5, shared by the rag and web backends.

An index is one sqlite file: ``docs`` (rowid, id, title, text) holds the passages and
``fts`` is an external-content FTS5 table over their title and text (porter stemming,
diacritics folded), ranked with ``bm25`` weighting the title twice. Indexes are built
once per corpus fingerprint: the builder takes an exclusive file lock, writes a
temporary file and renames it into place, so processes warming up at the same time
build it once and never read a half-written file.

Free text from users never reaches FTS5 syntax: :func:`match_query` keeps only word
tokens, each quoted, OR-ed together (stop words dropped when other words remain).
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

__all__ = [
    "INDEX_VERSION",
    "FtsIndex",
    "IndexInterrupted",
    "build_index",
    "file_fingerprint",
    "match_query",
]

INDEX_VERSION = 1
TOKENIZER = "porter unicode61 remove_diacritics 2"
TITLE_WEIGHT = 2.0
MAX_QUERY_TERMS = 32

_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    """a an and are as at be but by can do does for from has have how i if in into is it
    its of on or so such that the their then there these they this to was what when where
    which who whom why will with you your""".split()
)


class IndexInterrupted(Exception):
    """A query ran past its deadline and was stopped (retrying with more time is safe)."""


def match_query(text: str, max_terms: int = MAX_QUERY_TERMS) -> str | None:
    """Turn free text into a safe FTS5 query: quoted word tokens joined with OR.

    Returns:
        The MATCH expression, or None when the text holds no word at all.
    """
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text or "")))
    if not words:
        return None
    content = [w for w in words if w not in STOPWORDS] or words
    return " OR ".join(f'"{w}"' for w in content[:max_terms])


def file_fingerprint(*paths: Path, extra: str = "") -> str:
    """Fingerprint of files by resolved path, size and mtime (and the index version)."""
    h = hashlib.sha256(f"v{INDEX_VERSION}|{extra}".encode())
    for path in paths:
        st = Path(path).stat()
        h.update(f"|{Path(path).resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def build_index(path: Path, docs: Iterable[dict], meta: dict | None = None) -> bool:
    """Build the index file at ``path`` from ``{id, title, text}`` dicts, unless it exists.

    Safe when several processes call it at once: one builds, the others wait on the
    lock and then find the finished file.

    Returns:
        True if this call built the index, False if it was already there.
    """
    path = Path(path)
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                return False
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                _write_index(tmp, docs, meta or {})
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_index(tmp: Path, docs: Iterable[dict], meta: dict) -> None:
    started = time.perf_counter()
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -65536")
        conn.execute("BEGIN")
        conn.execute("CREATE TABLE docs (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL, title TEXT NOT NULL, "
                     "text TEXT NOT NULL)")
        conn.execute(f"CREATE VIRTUAL TABLE fts USING fts5(title, text, content='docs', content_rowid='rowid', "
                     f"tokenize='{TOKENIZER}')")
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        count = 0
        batch: list[tuple[str, str, str]] = []
        for doc in docs:
            batch.append((doc["id"], doc["title"], doc["text"]))
            if len(batch) >= 5000:
                conn.executemany("INSERT INTO docs (id, title, text) VALUES (?, ?, ?)", batch)
                count += len(batch)
                batch.clear()
        conn.executemany("INSERT INTO docs (id, title, text) VALUES (?, ?, ?)", batch)
        count += len(batch)
        conn.execute("CREATE INDEX ix_docs_id ON docs (id)")
        conn.execute("INSERT INTO fts (fts) VALUES ('rebuild')")
        conn.execute("INSERT INTO fts (fts) VALUES ('optimize')")
        conn.execute(f"INSERT INTO fts (fts, rank) VALUES ('rank', 'bm25({TITLE_WEIGHT}, 1.0)')")
        info = {**meta, "passages": count, "index_version": INDEX_VERSION, "tokenizer": TOKENIZER,
                "build_seconds": round(time.perf_counter() - started, 3),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
        conn.execute("COMMIT")
    finally:
        conn.close()


class FtsIndex:
    """Read-only access to a built index; one sqlite connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self.meta = {k: json.loads(v) for k, v in self._conn().execute("SELECT key, value FROM meta")}

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            conn.execute("PRAGMA mmap_size = 268435456")
            conn.execute("PRAGMA cache_size = -16384")
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _deadline(self, seconds: float | None) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        if not seconds:
            yield conn
            return
        stop = time.monotonic() + seconds
        conn.set_progress_handler(lambda: 1 if time.monotonic() > stop else 0, 20_000)
        try:
            yield conn
        except sqlite3.OperationalError as err:
            if "interrupt" in str(err):
                raise IndexInterrupted(f"search stopped after {seconds:.3g} s") from err
            raise
        finally:
            conn.set_progress_handler(None, 0)

    def search(self, match: str, limit: int, timeout: float | None = None,
               with_snippet: bool = False) -> list[dict]:
        """Best ``limit`` passages for an FTS5 MATCH expression (see :func:`match_query`).

        Each hit has ``id``, ``title``, ``text``, ``score`` (higher is better: the
        negated FTS5 bm25 rank) and, with ``with_snippet``, a ``snippet``.
        """
        snippet = ", snippet(fts, 1, '', '', ' … ', 40)" if with_snippet else ""
        if with_snippet:
            sql = (f"SELECT d.id, d.title, d.text, fts.rank{snippet} FROM fts JOIN docs d ON d.rowid = fts.rowid "
                   "WHERE fts MATCH ? ORDER BY fts.rank LIMIT ?")
        else:
            sql = ("SELECT d.id, d.title, d.text, f.rank FROM "
                   "(SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT ?) AS f "
                   "JOIN docs d ON d.rowid = f.rowid ORDER BY f.rank")
        with self._deadline(timeout) as conn:
            rows = conn.execute(sql, (match, limit)).fetchall()
        hits = []
        for row in rows:
            hit = {"id": row[0], "title": row[1], "text": row[2], "score": round(-row[3], 4)}
            if with_snippet:
                hit["snippet"] = row[4]
            hits.append(hit)
        return hits

    def get(self, doc_id: str) -> dict | None:
        row = self._conn().execute("SELECT id, title, text FROM docs WHERE id = ? LIMIT 1", (doc_id,)).fetchone()
        return None if row is None else {"id": row[0], "title": row[1], "text": row[2]}

    def count(self) -> int:
        return int(self.meta.get("passages", 0))

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
