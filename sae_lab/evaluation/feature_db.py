"""The feature database: one SQLite file per SAE (schema in README.md here), its writer, checks and reader.

Writing is atomic (``sae_lab.fileio.atomic_path``: temp name, fsync, rename) and ends with a completion
record in ``meta``; a ``<name>.sha256`` sidecar holds the file's hash. Opening checks, in order: the SQLite header
(magic, and file size == page size x page count, which catches truncation), the SHA-256 sidecar (see
:func:`check_sidecar`: hashed once, then a cheap size/mtime/inode check), ``PRAGMA quick_check``, the
completion record and the row counts it lists; ``verify='full'`` re-hashes the file every time. Any
failure raises ``FeatureDBError`` naming the file.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import struct
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from sae_lab import argcheck as A
from sae_lab.fileio import atomic_path, checksum_path, read_checksum, remove_temps, sha256_file, write_checksum

SCHEMA_VERSION = 2  # 2: table top_tokens (version-1 databases are read, searched by a scan)
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE features (id INTEGER PRIMARY KEY, n_active INTEGER NOT NULL, density REAL NOT NULL,
  mean_act REAL NOT NULL, max_act REAL NOT NULL, hist_max REAL NOT NULL, hist BLOB NOT NULL,
  decoder_norm REAL NOT NULL);
CREATE TABLE examples (feature INTEGER NOT NULL, kind TEXT NOT NULL, interval INTEGER NOT NULL,
  rank INTEGER NOT NULL, value REAL NOT NULL, token_index INTEGER NOT NULL, context INTEGER NOT NULL,
  position INTEGER NOT NULL, start INTEGER NOT NULL, token_ids BLOB NOT NULL, acts BLOB NOT NULL,
  PRIMARY KEY (feature, kind, interval, rank)) WITHOUT ROWID;
CREATE TABLE intervals (feature INTEGER NOT NULL, interval INTEGER NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
  count INTEGER NOT NULL, PRIMARY KEY (feature, interval)) WITHOUT ROWID;
CREATE TABLE logits (feature INTEGER NOT NULL, sign INTEGER NOT NULL, rank INTEGER NOT NULL,
  token_id INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (feature, sign, rank)) WITHOUT ROWID;
CREATE TABLE neighbours (feature INTEGER NOT NULL, rank INTEGER NOT NULL, other INTEGER NOT NULL,
  cosine REAL NOT NULL, PRIMARY KEY (feature, rank)) WITHOUT ROWID;
CREATE TABLE cooccurrence (feature INTEGER NOT NULL, rank INTEGER NOT NULL, other INTEGER NOT NULL,
  count INTEGER NOT NULL, fraction REAL NOT NULL, PRIMARY KEY (feature, rank)) WITHOUT ROWID;
CREATE TABLE tokens (id INTEGER PRIMARY KEY, str TEXT NOT NULL);
CREATE TABLE top_tokens (token_id INTEGER NOT NULL, feature INTEGER NOT NULL, count INTEGER NOT NULL,
  max_value REAL NOT NULL, PRIMARY KEY (token_id, feature)) WITHOUT ROWID;
"""
# The activating token of each top example, per feature (derived from `examples`; searched by token).
TOP_TOKENS_SELECT = (
    "SELECT token_at(token_ids, position - start), feature, COUNT(*), MAX(value) FROM examples "
    "WHERE kind = 'top' GROUP BY 1, 2"
)
INDEXES = """
CREATE INDEX features_by_density ON features (density);
CREATE INDEX logits_by_token ON logits (token_id, sign, rank);
CREATE INDEX tokens_by_str ON tokens (str);
"""
TABLES = ("features", "examples", "intervals", "logits", "neighbours", "cooccurrence", "tokens")

# Explanations (written by `sae-lab explain`, sae_lab/explain/): added to an existing database by
# `migrate_explanations`, so databases without them (every version) stay readable. They are not part of the
# completion record: they are written one committed row at a time after the analysis. One row per (feature,
# explainer). Columns:
#   id            rowid (the FTS index's content_rowid)
#   feature       feature index
#   explainer     the model that wrote it: 'local:embedded', 'openai:<model>', ...
#   explanation   the text (full-text indexed in explanations_fts: porter-stemmed, searched with bm25)
#   raw           the model's whole answer, before parsing
#   prompt        prompt version (sae_lab/explain/README.md)
#   n_examples    examples the explainer was shown
#   created       unix time written
#   scorer        the model that scored it (NULL until scored)
#   detection, fuzzing                 balanced accuracy (0..1, 0.5 = chance; NULL: not scored / undefined)
#   detection_n, fuzzing_n             contexts those rest on (answers that parsed)
#   detection_random, fuzzing_random   the same for a random other feature's explanation (the floor)
#   detection_random_n, fuzzing_random_n
#   n_unparsed    scorer answers (contexts) that did not parse, over all four scores
#   scored        unix time scored
EXPLANATIONS_VERSION = 1
EXPLANATIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS explanations (id INTEGER PRIMARY KEY, feature INTEGER NOT NULL, explainer TEXT NOT NULL,
  explanation TEXT NOT NULL, raw TEXT NOT NULL, prompt TEXT NOT NULL, n_examples INTEGER NOT NULL,
  created REAL NOT NULL, scorer TEXT, detection REAL, detection_n INTEGER, fuzzing REAL, fuzzing_n INTEGER,
  detection_random REAL, detection_random_n INTEGER, fuzzing_random REAL, fuzzing_random_n INTEGER,
  n_unparsed INTEGER, scored REAL, UNIQUE (feature, explainer));
CREATE VIRTUAL TABLE IF NOT EXISTS explanations_fts USING fts5(explanation, content='explanations',
  content_rowid='id', tokenize='porter unicode61');
CREATE TRIGGER IF NOT EXISTS explanations_ai AFTER INSERT ON explanations BEGIN
  INSERT INTO explanations_fts (rowid, explanation) VALUES (new.id, new.explanation); END;
CREATE TRIGGER IF NOT EXISTS explanations_ad AFTER DELETE ON explanations BEGIN
  INSERT INTO explanations_fts (explanations_fts, rowid, explanation) VALUES ('delete', old.id, old.explanation);
  END;
CREATE TRIGGER IF NOT EXISTS explanations_au AFTER UPDATE OF explanation ON explanations BEGIN
  INSERT INTO explanations_fts (explanations_fts, rowid, explanation) VALUES ('delete', old.id, old.explanation);
  INSERT INTO explanations_fts (rowid, explanation) VALUES (new.id, new.explanation); END;
"""
EXPLANATION_COLUMNS = (
    "feature",
    "explainer",
    "explanation",
    "prompt",
    "n_examples",
    "created",
    "scorer",
    "detection",
    "detection_n",
    "fuzzing",
    "fuzzing_n",
    "detection_random",
    "detection_random_n",
    "fuzzing_random",
    "fuzzing_random_n",
    "n_unparsed",
    "scored",
)


class FeatureDBError(RuntimeError):
    """A feature database that is missing, truncated, corrupt or incomplete (the message names the file), or a bad
    argument to one of its queries (``FeatureQueryError``)."""


class FeatureQueryError(FeatureDBError, IndexError, ValueError):
    """A bad argument to a ``FeatureDB`` query (a feature out of range, a negative count, a string that is not a
    token of the vocabulary); the message names the argument. Also an IndexError/ValueError, as before."""


SPLIT_UP_TO = 100  # characters: longer non-token strings are not split into tokens for the message


# ---- writing -----------------------------------------------------------------------------------------


def write_feature_db(path: str | Path, meta: dict, tables: dict[str, Iterable[tuple]]) -> Path:
    """Write a complete database atomically: rows of each table (in the order of ``tables``), then indexes, then
    the completion record. ``top_tokens`` is derived from ``examples`` by SQL unless ``tables`` holds its rows."""
    path = Path(path)
    remove_temps(path.parent, path.name)  # left by a killed run (our own temporary names only)
    with atomic_path(path) as tmp:
        _write_tables(tmp, meta, tables)
        write_checksum(path, sha256_file(tmp))
    return path


def _write_tables(file: Path, meta: dict, tables: dict[str, Iterable[tuple]]) -> None:
    con = sqlite3.connect(file)
    try:
        con.execute("PRAGMA journal_mode=OFF")
        con.execute("PRAGMA synchronous=OFF")
        con.executescript(SCHEMA)
        counts = {}
        for name in [*tables, *TABLES]:  # the caller's order first (rows not ready yet can come last)
            if name in TABLES and name not in counts:
                counts[name] = _insert(con, name, tables.get(name, ()))
        counts = {name: counts[name] for name in TABLES}
        if "top_tokens" in tables:  # precomputed by the caller (must equal TOP_TOKENS_SELECT over `examples`)
            counts["top_tokens"] = _insert(con, "top_tokens", tables["top_tokens"])
        else:
            _register_functions(con)
            counts["top_tokens"] = con.execute(f"INSERT INTO top_tokens {TOP_TOKENS_SELECT}").rowcount
        con.executescript(INDEXES)
        entries = {**meta, "schema_version": SCHEMA_VERSION}
        con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in entries.items()])
        con.execute("INSERT INTO meta VALUES ('complete', ?)", (json.dumps({"row_counts": counts}),))
        con.commit()
    finally:
        con.close()


def _token_at(blob: bytes, i: int) -> int:
    """The i-th int32 (little-endian) of a token_ids blob."""
    return int.from_bytes(blob[4 * i : 4 * i + 4], "little", signed=True)


def _register_functions(con: sqlite3.Connection) -> None:
    con.create_function("token_at", 2, _token_at, deterministic=True)


def _insert(con: sqlite3.Connection, table: str, rows: Iterable[tuple], per_statement: int = 64) -> int:
    """Insert rows from any iterable (streamed in bounded blocks, never materialised); returns how many.
    Rows go ``per_statement`` to one multi-row INSERT (a quarter less time than one statement per row)."""
    width = len(con.execute(f"SELECT * FROM {table} LIMIT 0").description)
    one = f"({','.join('?' * width)})"
    many = f"INSERT INTO {table} VALUES {','.join([one] * per_statement)}"
    rows, n = iter(rows), 0
    while block := list(itertools.islice(rows, per_statement * 256)):
        full = len(block) - len(block) % per_statement
        con.executemany(
            many,
            (tuple(itertools.chain.from_iterable(block[i : i + per_statement])) for i in range(0, full, per_statement)),
        )
        con.executemany(f"INSERT INTO {table} VALUES {one}", block[full:])
        n += len(block)
    return n


def migrate_explanations(con: sqlite3.Connection, path: Path) -> None:
    """Add the explanations tables to an open, writable database (idempotent); refuse a newer version."""
    row = con.execute("SELECT value FROM meta WHERE key = 'explanations_version'").fetchone()
    if row is not None and json.loads(row[0]) > EXPLANATIONS_VERSION:
        raise FeatureDBError(
            f"feature database '{path}' holds explanations of a newer format (version "
            f"{json.loads(row[0])}); upgrade sae-lab to add to them"
        )
    con.executescript(
        f"BEGIN; {EXPLANATIONS_SCHEMA} INSERT OR REPLACE INTO meta VALUES ('explanations_version', "
        f"'{EXPLANATIONS_VERSION}'); COMMIT;"
    )


# ---- checks --------------------------------------------------------------------------------------------


def check_header(path: Path) -> None:
    """The SQLite magic and file size == page_size x page_count (header fields), else FeatureDBError."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        raise FeatureDBError(
            f"feature database '{path}' is not an SQLite file (truncated or overwritten); "
            f"rerun `sae-lab analyze` to rebuild it"
        )
    page_size = struct.unpack(">H", head[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change, n_pages, valid_for = (
        struct.unpack(">I", head[24:28])[0],
        struct.unpack(">I", head[28:32])[0],
        struct.unpack(">I", head[92:96])[0],
    )
    if change == valid_for and size != page_size * n_pages:
        raise FeatureDBError(
            f"feature database '{path}' is truncated or damaged: {size} bytes on disk, header says "
            f"{page_size * n_pages}; rerun `sae-lab analyze` to rebuild it"
        )


def check_database(path: Path, con: sqlite3.Connection, verify: str) -> dict:
    """quick_check, completion record and row counts; returns meta."""
    how = "rerun `sae-lab analyze` to rebuild it"
    try:
        result = con.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            raise FeatureDBError(f"feature database '{path}' is corrupt (quick_check: {result}); {how}")
        meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError as e:
        raise FeatureDBError(f"feature database '{path}' is corrupt ({e}); {how}") from None
    if "complete" not in meta:
        raise FeatureDBError(f"feature database '{path}' is incomplete (no completion record); {how}")
    for table, n in meta["complete"]["row_counts"].items():
        have = con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        if have != n:
            raise FeatureDBError(
                f"feature database '{path}': table {table} has {have} rows, the completion record says {n}; {how}"
            )
    return meta


TRUST_AFTER_S = 2.0  # file timestamps are coarse (a clock tick): only trust a stat record older than this


def check_sidecar(path: Path, full: bool = False) -> None:
    """Compare ``path`` with its ``.sha256`` sidecar; FeatureDBError on a mismatch.

    The first open hashes the file and, once the file is a few seconds old, records its size, mtime and inode
    in the sidecar (second line); later opens compare only those (a stat call, so a 16k-latent database opens
    fast) and re-hash when any differs. ``full`` always re-hashes. No sidecar (an older database): no check.
    """
    sidecar = checksum_path(path)
    checksum = read_checksum(path)
    if checksum is None:
        if full:
            raise FeatureDBError(
                f"feature database '{path}' has no SHA-256 sidecar ({sidecar}) to verify against; "
                "rerun `sae-lab analyze` to rebuild it"
            )
        return
    if being_modified(path):
        if full:
            raise FeatureDBError(
                f"feature database '{path}' is being changed by `sae-lab explain` (or one was "
                "interrupted): its SHA-256 is recorded when that ends; let it finish or rerun it"
            )
        return
    digest, second = checksum
    st = path.stat()
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    try:
        recorded = json.loads(second) if second is not None else None
    except json.JSONDecodeError:
        recorded = None
    if not full and recorded == stamp:
        return
    if sha256_file(path) != digest:
        raise FeatureDBError(
            f"feature database '{path}' does not match its recorded SHA-256 ({sidecar}): "
            "the file was damaged or changed; rerun `sae-lab analyze` to rebuild it"
        )
    if time.time() - st.st_mtime > TRUST_AFTER_S:
        try:
            write_checksum(path, digest, json.dumps(stamp))
        except OSError:
            pass  # a read-only location: the hash is simply checked on every open


MODIFYING = "modifying"  # the sidecar's second line while `sae-lab explain` adds rows: the hash is stale


def being_modified(path: Path) -> bool:
    """Whether ``path``'s sidecar says a writer (``sae-lab explain``) is adding rows (or was killed doing so)."""
    try:
        checksum = read_checksum(path)
        return checksum is not None and checksum[1] is not None and json.loads(checksum[1]).get(MODIFYING) is not None
    except (OSError, ValueError, AttributeError):
        return False


def begin_modification(path: Path, who: str) -> None:
    """Mark the database as being changed in place (readers then skip the stale hash; see check_sidecar)."""
    checksum = read_checksum(path)
    write_checksum(path, checksum[0] if checksum else "", json.dumps({MODIFYING: who, "since": time.time()}))


def end_modification(path: Path) -> None:
    """Record the changed file's SHA-256: the database is checked by hash again."""
    write_checksum(path, sha256_file(path))


def roll_back_unfinished(path: Path) -> None:
    """Roll back a transaction a killed writer left (``<db>-journal``), as any SQLite writer would on open;
    FeatureDBError if the location is read-only. (A read-only or immutable open would read its half-written
    pages as if they were committed.)"""
    journal = path.with_name(path.name + "-journal")
    if not journal.exists():
        return
    try:
        con = sqlite3.connect(path)
        try:
            con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()  # a read-write open rolls back
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise FeatureDBError(
            f"feature database '{path}' has an unfinished write ({journal.name}, left by an "
            f"interrupted `sae-lab explain`) that cannot be rolled back here ({e}); rerun that "
            "command where the file is writable"
        ) from None


# ---- reading -------------------------------------------------------------------------------------------


class FeatureDB:
    """Read-only access to one SAE's feature database; checked on open (see the module docstring)."""

    def __init__(self, path: str | Path, verify: str = "quick"):
        self.path = Path(path)
        if not self.path.is_file():
            raise FeatureDBError(f"feature database '{self.path}' does not exist; run `sae-lab analyze` first")
        if verify not in ("quick", "full"):
            raise FeatureQueryError(f"verify must be 'quick' or 'full', got {verify!r}")
        roll_back_unfinished(self.path)
        check_header(self.path)
        check_sidecar(self.path, full=verify == "full")
        live = being_modified(self.path)  # rows are being added: read with locks, see each commit whole
        try:
            self.con = sqlite3.connect(
                f"file:{self.path}?mode=ro{'' if live else '&immutable=1'}", uri=True, check_same_thread=False
            )
        except sqlite3.DatabaseError as e:
            raise FeatureDBError(f"feature database '{self.path}' cannot be opened: {e}") from None
        self.meta = check_database(self.path, self.con, verify)
        self.n_features = int(self.meta["d_sae"])
        _register_functions(self.con)
        tables = {r[0] for r in self.con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        self._has_top_tokens = "top_tokens" in tables
        self.has_explanations = "explanations" in tables

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> "FeatureDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def summary(self) -> dict:
        """The SAE, data and config the database was built from, plus dead/dense counts."""
        q = self.con.execute("SELECT COUNT(*), SUM(n_active = 0), SUM(density > 0.1), AVG(density) FROM features")
        n, dead, dense, mean_density = q.fetchone()
        return {
            **{k: v for k, v in self.meta.items() if k != "complete"},
            "n_features": n,
            "n_dead": dead or 0,
            "n_dense": dense or 0,
            "mean_density": mean_density,
            "path": str(self.path),
        }

    def _check_id(self, i: int, name: str = "feature") -> int:
        """A feature index (an int of any kind) in range, else FeatureQueryError."""
        return A.as_index(i, name, self.n_features, FeatureQueryError, "feature", "this SAE")

    @staticmethod
    def _count(n, name: str) -> int:
        return A.as_count(n, name, FeatureQueryError, minimum=0)

    def _vocab_forms(self, token, forms: Iterable[str]) -> dict[int, str]:
        """Vocabulary ids whose string is one of ``forms`` (of the non-empty string ``token``); FeatureQueryError
        naming the tokens ``token`` splits into when there is none."""
        forms = sorted(set(forms) - {""})
        rows = self.con.execute(f"SELECT id, str FROM tokens WHERE str IN ({','.join('?' * len(forms))})", forms)
        ids = dict(rows.fetchall())
        if not ids:
            parts = self._split(token)
            how = f": it is {len(parts)} tokens {parts}" if parts else ""
            raise FeatureQueryError(
                f"token {token!r} is not a token of the model's vocabulary{how}; search one "
                f"token at a time{f' (e.g. {parts[0]!r})' if parts else ''}"
            )
        return ids

    def _split(self, text: str) -> list[str] | None:
        """``text`` as vocabulary strings, longest first from the left (an illustration of its tokens)."""
        parts, i = [], 0
        while 0 < len(text) <= SPLIT_UP_TO and i < len(text):
            j = next(
                (
                    j
                    for j in range(len(text), i, -1)
                    if self.con.execute("SELECT 1 FROM tokens WHERE str = ? LIMIT 1", (text[i:j],)).fetchone()
                ),
                None,
            )
            if j is None:
                return None
            parts.append(text[i:j])
            i = j
        return parts or None

    def token_strings(self, ids: Iterable[int]) -> dict[int, str]:
        ids = sorted({int(i) for i in ids if i >= 0})
        if not ids:
            return {}
        q = f"SELECT id, str FROM tokens WHERE id IN ({','.join('?' * len(ids))})"
        return dict(self.con.execute(q, ids).fetchall())

    def feature(self, i: int) -> dict:
        """The features row of ``i`` with its histogram (counts and bin edges)."""
        i = self._check_id(i)
        row = self.con.execute(
            "SELECT n_active, density, mean_act, max_act, hist_max, hist, decoder_norm FROM features WHERE id = ?", (i,)
        ).fetchone()
        n_active, density, mean_act, max_act, hist_max, hist, dnorm = row
        counts = np.frombuffer(hist, dtype="<i8").tolist()
        edges = np.linspace(0.0, hist_max, len(counts) + 1).tolist()
        return {
            "id": i,
            "n_active": n_active,
            "density": density,
            "mean_act": mean_act,
            "max_act": max_act,
            "hist_counts": counts,
            "hist_edges": edges,
            "decoder_norm": dnorm,
        }

    def _examples(self, where: str, args: tuple) -> list[dict]:
        rows = self.con.execute(
            f"SELECT interval, rank, value, token_index, context, position, start, token_ids, acts "
            f"FROM examples WHERE {where} ORDER BY interval, rank",
            args,
        ).fetchall()
        ids = [np.frombuffer(r[7], dtype="<i4") for r in rows]
        strings = self.token_strings(np.concatenate(ids).tolist() if ids else [])
        out = []
        for r, tok in zip(rows, ids):
            out.append(
                {
                    "interval": r[0],
                    "rank": r[1],
                    "value": r[2],
                    "token_index": r[3],
                    "context": r[4],
                    "position": r[5],
                    "start": r[6],
                    "highlight": r[5] - r[6],
                    "token_ids": tok.tolist(),
                    "tokens": [strings.get(int(t), f"<{t}>") for t in tok],
                    "acts": np.frombuffer(r[8], dtype="<f4").tolist(),
                }
            )
        return out

    def top_examples(self, i: int, n: int | None = None) -> list[dict]:
        """The ``n`` (>= 0; default all stored) highest-activating examples of feature ``i``, highest first."""
        i = self._check_id(i)
        limit = 1 << 30 if n is None else self._count(n, "n")
        return self._examples("feature = ? AND kind = 'top' AND rank < ?", (i, limit))

    def interval_examples(self, i: int) -> list[dict]:
        """Activation intervals of feature ``i`` (lo, hi, count) with their sampled examples."""
        i = self._check_id(i)
        ex = self._examples("feature = ? AND kind = 'interval'", (i,))
        rows = self.con.execute(
            "SELECT interval, lo, hi, count FROM intervals WHERE feature = ? ORDER BY interval", (i,)
        ).fetchall()
        return [
            {"interval": j, "lo": lo, "hi": hi, "count": c, "examples": [e for e in ex if e["interval"] == j]}
            for j, lo, hi, c in rows
        ]

    def logits(self, i: int) -> dict[str, list[dict]]:
        """Top positive and negative logit effects of feature ``i``."""
        i = self._check_id(i)
        rows = self.con.execute(
            "SELECT sign, rank, token_id, value FROM logits WHERE feature = ? ORDER BY sign DESC, rank", (i,)
        ).fetchall()
        strings = self.token_strings(r[2] for r in rows)
        out: dict[str, list[dict]] = {"positive": [], "negative": []}
        for sign, _, tid, value in rows:
            out["positive" if sign > 0 else "negative"].append(
                {"token_id": tid, "token": strings.get(tid, ""), "value": value}
            )
        return out

    def neighbours(self, i: int) -> list[dict]:
        i = self._check_id(i)
        return [
            {"feature": o, "cosine": c}
            for o, c in self.con.execute("SELECT other, cosine FROM neighbours WHERE feature = ? ORDER BY rank", (i,))
        ]

    def cooccurring(self, i: int) -> list[dict]:
        i = self._check_id(i)
        return [
            {"feature": o, "count": c, "fraction": f}
            for o, c, f in self.con.execute(
                "SELECT other, count, fraction FROM cooccurrence WHERE feature = ? ORDER BY rank", (i,)
            )
        ]

    def feature_page(self, i: int) -> dict:
        """Everything the dashboard shows for feature ``i``."""
        return {
            **self.feature(i),
            "top_examples": self.top_examples(i),
            "intervals": self.interval_examples(i),
            "logits": self.logits(i),
            "neighbours": self.neighbours(i),
            "cooccurring": self.cooccurring(i),
            "explanations": self.explanations(i),
        }

    # ---- explanations (written by `sae-lab explain`; columns: EXPLANATIONS_SCHEMA above) ----------------

    def explanations(self, i: int | None = None) -> list[dict]:
        """The explanations of feature ``i`` (every explainer's, best detection score first), or with ``i=None``
        all of them in feature order (e.g. for an export); [] when the database has none."""
        if not self.has_explanations:
            return []
        cols = ", ".join(EXPLANATION_COLUMNS)
        if i is None:
            rows = self.con.execute(f"SELECT {cols} FROM explanations ORDER BY feature, explainer")
        else:
            rows = self.con.execute(
                f"SELECT {cols} FROM explanations WHERE feature = ? ORDER BY "
                "detection IS NULL, detection DESC, explainer",
                (self._check_id(i),),
            )
        return [dict(zip(EXPLANATION_COLUMNS, r)) for r in rows]

    def search(self, query: str, limit: int = 20) -> list[dict]:
        """Features whose explanation matches the words of ``query`` (full text, stemmed: 'bracket' finds
        'brackets'), best first (bm25: rarer words and more of them rank higher); each row is an explanation
        (``explanations()`` columns) with its ``rank``. FeatureQueryError for a query with no words, FeatureDBError
        when the database has no explanations (run `sae-lab explain`)."""
        import re

        query = A.as_text(query, "query", FeatureQueryError, "words such as 'closing bracket'")
        limit = self._count(limit, "limit")
        words = re.findall(r"\w+", query)
        if not words:
            raise FeatureQueryError(f"query {query!r} has no words to search for; give words such as 'bracket'")
        if not self.has_explanations:
            raise FeatureDBError(
                f"feature database '{self.path}' has no explanations to search; write them with "
                "`sae-lab explain RUN_OR_SAE_DIR`"
            )
        match = " OR ".join('"' + w.replace('"', "") + '"' for w in words)
        cols = ", ".join(f"e.{c}" for c in EXPLANATION_COLUMNS)
        rows = self.con.execute(
            f"SELECT {cols}, bm25(explanations_fts) FROM explanations_fts JOIN explanations e "
            "ON e.id = explanations_fts.rowid WHERE explanations_fts MATCH ? "
            "ORDER BY bm25(explanations_fts), e.feature LIMIT ?",
            (match, limit),
        ).fetchall()
        return [{**dict(zip(EXPLANATION_COLUMNS, r)), "rank": -r[-1]} for r in rows]

    def features_with_logit(self, token: str, top: bool = True, rank_below: int | None = None) -> list[dict]:
        """Features whose top positive (``top=True``) or negative logit effects include the token string ``token``
        (exact string of one vocabulary token, e.g. ' Paris'), strongest first; ``rank_below`` (>= 0) limits to
        the first ranks. A string that is not one token (' New York', '') raises FeatureQueryError naming its
        tokens; a token that no feature promotes gives []."""
        token = A.as_text(token, "token", FeatureQueryError, "a token string such as ' Paris'")
        top = A.as_flag(top, "top", FeatureQueryError)
        limit = 1 << 30 if rank_below is None else self._count(rank_below, "rank_below")
        self._vocab_forms(token, [token])
        rows = self.con.execute(
            "SELECT l.feature, l.rank, l.value, t.id FROM tokens t JOIN logits l ON l.token_id = t.id "
            "WHERE t.str = ? AND l.sign = ? AND l.rank < ?",
            (token, 1 if top else -1, limit),
        ).fetchall()
        rows.sort(key=lambda r: -abs(r[2]))
        return [{"feature": f, "rank": r, "value": v, "token_id": t} for f, r, v, t in rows]

    # ---- lists and searches (the dashboard's ways to open a feature; each backed by an index) ----------

    def list_features(
        self,
        order: str = "density",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
        alive_only: bool = False,
    ) -> list[dict]:
        """A page of features (id, density, n_active, mean_act, max_act) sorted by ``order`` ('density' or 'id')."""
        column = {"density": "density", "id": "id"}.get(order) if isinstance(order, str) else None
        if column is None:
            raise FeatureQueryError(f"order must be 'density' or 'id', got {order!r}")
        descending = A.as_flag(descending, "descending", FeatureQueryError)
        alive_only = A.as_flag(alive_only, "alive_only", FeatureQueryError)
        limit, offset = self._count(limit, "limit"), self._count(offset, "offset")
        where = "WHERE density > 0" if alive_only else ""
        rows = self.con.execute(
            f"SELECT id, density, n_active, mean_act, max_act FROM features {where} ORDER BY "
            f"{column} {'DESC' if descending else 'ASC'}, id LIMIT ? OFFSET ?",
            (int(limit), int(offset)),
        ).fetchall()
        return [{"id": i, "density": d, "n_active": n, "mean_act": m, "max_act": x} for i, d, n, m, x in rows]

    def n_alive(self) -> int:
        """How many features fired at least once in the analysed tokens."""
        return self.con.execute("SELECT COUNT(*) FROM features WHERE density > 0").fetchone()[0]

    def random_alive(self, seed: int | None = None) -> int | None:
        """A uniformly random feature among the alive ones (None if every feature is dead)."""
        seed = None if seed is None else self._count(seed, "seed")
        n = self.n_alive()
        if n == 0:
            return None
        k = int(np.random.default_rng(seed).integers(n))
        return self.con.execute(
            "SELECT id FROM features WHERE density > 0 ORDER BY density, id LIMIT 1 OFFSET ?", (k,)
        ).fetchone()[0]

    def _token_ids(self, token: str) -> dict[int, str]:
        """Vocabulary ids whose string is ``token`` (a non-empty string), with or without one leading space;
        FeatureQueryError if none is a vocabulary token."""
        token = A.as_text(token, "token", FeatureQueryError, "a token string such as 'Paris'")
        core = token.strip()
        return self._vocab_forms(token, [token, core, " " + core])

    def features_with_example_token(self, token: str, limit: int = 100) -> list[dict]:
        """Features whose top examples activate on the token string ``token`` (with or without a leading space),
        most examples first, then highest activation: [{feature, token, token_id, count, max_value}]. The first
        ``limit`` (>= 0); a string that is not a token in either form raises FeatureQueryError."""
        ids = self._token_ids(token)
        limit = self._count(limit, "limit")
        marks = ",".join("?" * len(ids))
        if self._has_top_tokens:
            q = f"SELECT token_id, feature, count, max_value FROM top_tokens WHERE token_id IN ({marks})"
        else:  # version-1 database: derive from the examples (a scan)
            q = (
                f"SELECT tid, feature, COUNT(*), MAX(value) FROM (SELECT token_at(token_ids, position - start) AS "
                f"tid, feature, value FROM examples WHERE kind = 'top') WHERE tid IN ({marks}) GROUP BY 1, 2"
            )
        rows = self.con.execute(q, list(ids)).fetchall()
        rows.sort(key=lambda r: (-r[2], -r[3], r[1]))
        return [
            {"feature": f, "token": ids[t], "token_id": t, "count": c, "max_value": v} for t, f, c, v in rows[:limit]
        ]

    def features_with_logit_token(self, token: str, top: bool = True, limit: int = 100) -> list[dict]:
        """``features_with_logit`` for the token with or without a leading space, strongest first (the first
        ``limit``, >= 0); a string that is not a token in either form raises FeatureQueryError."""
        ids, limit = self._token_ids(token), self._count(limit, "limit")
        out = [dict(r, token=s) for s in sorted(set(ids.values())) for r in self.features_with_logit(s, top)]
        out.sort(key=lambda r: -abs(r["value"]))
        return out[:limit]
