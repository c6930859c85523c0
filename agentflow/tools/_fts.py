"""A BM25 passage index in sqlite FTS5, shared by the rag and web backends.

An index is one sqlite file: ``docs`` (rowid, id, title, text) holds the passages and
``fts`` is an external-content FTS5 table over their title and text (porter stemming,
diacritics folded), ranked with ``bm25`` weighting the title twice. Indexes are built
once per corpus fingerprint: the builder takes an exclusive file lock, writes a
temporary file and renames it into place, so processes warming up at the same time
build it once and never read a half-written file.

Free text from users never reaches FTS5 syntax: :func:`match_query` keeps only word
tokens, each quoted, OR-ed together (stop words dropped when other words remain).

Ranking is BM25 (k1 = 1.2, b = 0.75, FTS5's own ``bm25``). FTS5 scores every row that
matches, so a query with a very common word costs time in proportion to the corpus. Such
queries run in two stages, like Lucene's ``CommonTermsQuery``: the selective words
(document frequency at most 10% of the corpus) find the best ``CANDIDATES`` passages with
FTS5, then the common words' BM25 contributions are added to those candidates (same
stems, idf and length normalisation as FTS5) and they are re-sorted. Queries made only of
selective words, and every query on a small corpus, are ranked by FTS5 in one pass.
"""
from __future__ import annotations

import collections
import contextlib
import math
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

INDEX_VERSION = 2
TOKENIZER = "porter unicode61 remove_diacritics 2"
TITLE_WEIGHT = 2.0
MAX_QUERY_TERMS = 32
K1, B = 1.2, 0.75
EXACT_POSTINGS = 5000
"""Queries whose words occur in at most this many passages in all are ranked in one pass."""
COMMON_FRACTION = 0.10
CANDIDATES = 100

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
STOPWORDS = frozenset(
    """a an and are as at be but by can do does for from has have how i if in into is it
    its of on or so such that the their then there these they this to was what when where
    which who whom why will with you your""".split()
)


class IndexInterrupted(Exception):
    """A query ran past its deadline and was stopped (retrying with more time is safe)."""


def query_words(text: str, max_terms: int = MAX_QUERY_TERMS) -> list[str]:
    """The distinct lower-case words of ``text`` worth searching for (stop words dropped
    when other words remain)."""
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(text or "")))
    return ([w for w in words if w not in STOPWORDS] or words)[:max_terms]


def _match(words: Iterable[str]) -> str:
    return " OR ".join(f'"{w}"' for w in words)


def match_query(text: str, max_terms: int = MAX_QUERY_TERMS) -> str | None:
    """Turn free text into a safe FTS5 query: quoted word tokens joined with OR.

    Returns:
        The MATCH expression, or None when the text holds no word at all.
    """
    words = query_words(text, max_terms)
    return _match(words) if words else None


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
        conn.execute("CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, 'fts', 'row')")
        conn.execute("CREATE TABLE terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID")
        conn.execute("INSERT INTO terms SELECT term, doc FROM temp.vocab")
        total_tokens = conn.execute("SELECT coalesce(sum(cnt), 0) FROM temp.vocab").fetchone()[0]
        conn.execute("DROP TABLE temp.vocab")
        info = {**meta, "passages": count, "total_tokens": total_tokens, "index_version": INDEX_VERSION, "tokenizer": TOKENIZER,
                "build_seconds": round(time.perf_counter() - started, 3),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in info.items()])
        conn.execute("COMMIT")
    finally:
        conn.close()


class _Stemmer:
    """FTS5's own tokenizer applied to single words (through an in-memory FTS5 table),
    so Python-side scoring sees exactly the terms the index holds. Results are cached."""

    MAX_CACHE = 500_000

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.conn.execute(f"CREATE VIRTUAL TABLE s USING fts5(x, tokenize='{TOKENIZER}')")
        self.conn.execute("CREATE VIRTUAL TABLE v USING fts5vocab(s, 'instance')")
        self.cache: dict[str, str | None] = {}
        self.lock = threading.Lock()

    def stems(self, words: Iterable[str]) -> dict[str, str | None]:
        cache = self.cache
        missing = [w for w in set(words) if w not in cache]
        if missing:
            with self.lock:
                if len(self.cache) > self.MAX_CACHE:
                    self.cache = {}  # swapped, not cleared: other threads keep reading the old dict
                cache = self.cache
                self.conn.execute("DELETE FROM s")
                self.conn.executemany("INSERT INTO s (rowid, x) VALUES (?, ?)", enumerate(missing, 1))
                found = {missing[doc - 1]: term for doc, term in self.conn.execute("SELECT doc, term FROM v")}
                for word in missing:
                    cache[word] = found.get(word)
        return cache


_STEMMER: _Stemmer | None = None
_STEMMER_LOCK = threading.Lock()


def _stemmer() -> _Stemmer:
    global _STEMMER
    with _STEMMER_LOCK:
        if _STEMMER is None:
            _STEMMER = _Stemmer()
        return _STEMMER


class FtsIndex:
    """Read-only access to a built index; one sqlite connection per thread."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._local = threading.local()
        self.meta = {k: json.loads(v) for k, v in self._conn().execute("SELECT key, value FROM meta")}
        self.passages = int(self.meta.get("passages", 0))
        self.avgdl = max(1.0, self.meta.get("total_tokens", 0) / max(1, self.passages))

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

    def _idf(self, df: int) -> float:
        idf = math.log((self.passages - df + 0.5) / (df + 0.5))
        return idf if idf > 0 else 1e-6

    def _rank(self, conn: sqlite3.Connection, words: list[str], limit: int, with_snippet: bool) -> list[dict]:
        """FTS5 BM25 over ``words`` (OR-ed), best ``limit`` passages."""
        if with_snippet:
            sql = ("SELECT d.id, d.title, d.text, fts.rank, snippet(fts, 1, '', '', ' … ', 40) FROM fts "
                   "JOIN docs d ON d.rowid = fts.rowid WHERE fts MATCH ? ORDER BY fts.rank LIMIT ?")
        else:
            sql = ("SELECT d.id, d.title, d.text, f.rank FROM "
                   "(SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rank LIMIT ?) AS f "
                   "JOIN docs d ON d.rowid = f.rowid ORDER BY f.rank")
        hits = []
        for row in conn.execute(sql, (_match(words), limit)):
            hit = {"id": row[0], "title": row[1], "text": row[2], "score": -row[3]}
            if with_snippet:
                hit["snippet"] = row[4]
            hits.append(hit)
        return hits

    def _add_common(self, hits: list[dict], common: dict[str, float]) -> None:
        """Add the BM25 contributions of ``common`` stems (stem → idf) to each hit."""
        stemmer = _stemmer()
        tokenized = [(_WORD.findall(h["title"].lower()), _WORD.findall(h["text"].lower())) for h in hits]
        stems = stemmer.stems(w for title, text in tokenized for part in (title, text) for w in part)
        for hit, (title, text) in zip(hits, tokenized):
            freq: collections.Counter = collections.Counter()
            for word in title:
                freq[stems[word]] += TITLE_WEIGHT
            for word in text:
                freq[stems[word]] += 1.0
            norm = K1 * (1 - B + B * (len(title) + len(text)) / self.avgdl)
            for stem, idf in common.items():
                f = freq.get(stem, 0.0)
                if f:
                    hit["score"] += idf * f * (K1 + 1) / (f + norm)

    def search(self, query: str, limit: int, timeout: float | None = None,
               with_snippet: bool = False) -> list[dict]:
        """Best ``limit`` passages for free-text ``query`` by BM25 (see the module doc).

        Each hit has ``id``, ``title``, ``text``, ``score`` (higher is better) and, with
        ``with_snippet``, a ``snippet``. A query without words finds nothing.

        Raises:
            IndexInterrupted: the search ran past ``timeout`` seconds.
        """
        words = query_words(query)
        if not words:
            return []
        with self._deadline(timeout) as conn:
            stems = _stemmer().stems(words)
            by_stem: dict[str, tuple[str, int]] = {}
            for word in words:
                stem = stems[word]
                if stem and stem not in by_stem:
                    row = conn.execute("SELECT df FROM terms WHERE term = ?", (stem,)).fetchone()
                    by_stem[stem] = (word, row[0] if row else 0)
            if not by_stem or not any(df for _, df in by_stem.values()):
                return []
            terms = sorted(by_stem.items(), key=lambda item: item[1][1])
            cutoff = max(COMMON_FRACTION * self.passages, 1.0)
            selective = [word for _, (word, df) in terms if df <= cutoff] or [terms[0][1][0]]
            common = {stem: self._idf(df) for stem, (word, df) in terms if word not in selective and df}
            if not common or sum(df for _, (_, df) in terms) <= EXACT_POSTINGS:
                hits = self._rank(conn, [word for _, (word, _) in terms], limit, with_snippet)
            else:
                hits = self._rank(conn, selective, max(CANDIDATES, 4 * limit), with_snippet)
                if len(hits) < limit:
                    hits = self._rank(conn, [word for _, (word, _) in terms], limit, with_snippet)
                else:
                    self._add_common(hits, common)
                    hits.sort(key=lambda h: h["score"], reverse=True)
                    del hits[limit:]
        for hit in hits:
            hit["score"] = round(hit["score"], 4)
        return hits

    def get(self, doc_id: str) -> dict | None:
        row = self._conn().execute("SELECT id, title, text FROM docs WHERE id = ? LIMIT 1", (doc_id,)).fetchone()
        return None if row is None else {"id": row[0], "title": row[1], "text": row[2]}

    def count(self) -> int:
        return self.passages

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
