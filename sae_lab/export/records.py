"""Every feature of a feature database as one record, read in bounded batches (the exporters' one source).

A record holds what :meth:`FeatureDB.feature_page` returns for the feature (the same keys and values; tested
equal), plus ``explanations`` when the database has an ``explanations`` table (written by ``sae-lab explain``).
Each batch reads each table once for ``batch`` features (``WHERE feature IN (...)`` on the primary keys), so a
16k-feature database streams in bounded memory (2.2x faster than one ``feature_page`` per feature).
"""

from __future__ import annotations

import sqlite3
from itertools import groupby
from operator import itemgetter
from typing import Iterable, Iterator, Sequence

import numpy as np

from sae_lab.evaluation.feature_db import EXPLANATION_COLUMNS, FeatureDB

BATCH = 256  # features per read
# Columns of an `explanations` row carried into exports when present (the explain helper's table; any subset).
EXPLANATION_FIELDS = EXPLANATION_COLUMNS[1:]  # the explanations table's columns after `feature`


def vocabulary(db: FeatureDB) -> dict[int, str]:
    """The database's token strings by id (read once per export)."""
    return dict(db.con.execute("SELECT id, str FROM tokens"))


def has_explanations(con: sqlite3.Connection) -> bool:
    """Whether the database holds an ``explanations`` table (``sae-lab explain`` adds it)."""
    return (
        con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'explanations'").fetchone() is not None
    )


def iter_records(
    db: FeatureDB, features: Sequence[int] | None = None, vocab: dict[int, str] | None = None, batch: int = BATCH
) -> Iterator[dict]:
    """One record per feature of ``features`` (default: all, by id), in that order; see the module docstring."""
    ids = list(range(db.n_features)) if features is None else [int(f) for f in features]
    vocab = vocabulary(db) if vocab is None else vocab
    explained = has_explanations(db.con)
    for start in range(0, len(ids), batch):
        yield from _batch(db.con, ids[start : start + batch], vocab, explained)


def _select(con: sqlite3.Connection, columns: str, table: str, ids: list[int], order: str) -> dict[int, list]:
    """Rows of ``table`` for features ``ids``, grouped by feature (the first column)."""
    q = f"SELECT {columns} FROM {table} WHERE feature IN ({','.join('?' * len(ids))}) ORDER BY {order}"
    return {f: list(rows) for f, rows in groupby(con.execute(q, ids), key=itemgetter(0))}


def _batch(con: sqlite3.Connection, ids: list[int], vocab: dict[int, str], explained: bool) -> Iterator[dict]:
    marks = ",".join("?" * len(ids))
    rows = {
        r[0]: r
        for r in con.execute(
            "SELECT id, n_active, density, mean_act, max_act, hist_max, hist, decoder_norm FROM features "
            f"WHERE id IN ({marks})",
            ids,
        )
    }
    examples = _select(
        con,
        "feature, kind, interval, rank, value, token_index, context, position, start, token_ids, acts",
        "examples",
        ids,
        "feature, kind, interval, rank",
    )
    intervals = _select(con, "feature, interval, lo, hi, count", "intervals", ids, "feature, interval")
    logits = _select(con, "feature, sign, rank, token_id, value", "logits", ids, "feature, sign DESC, rank")
    neighbours = _select(con, "feature, other, cosine", "neighbours", ids, "feature, rank")
    cooc = _select(con, "feature, other, count, fraction", "cooccurrence", ids, "feature, rank")
    notes = _explanations(con, ids) if explained else {}
    for f in ids:
        ex = [_example(r, vocab) for r in examples.get(f, ())]
        record = {
            **_feature(rows[f]),
            "top_examples": [e for e in ex if e["interval"] == -1],
            "intervals": [
                {"interval": j, "lo": lo, "hi": hi, "count": c, "examples": [e for e in ex if e["interval"] == j]}
                for _, j, lo, hi, c in intervals.get(f, ())
            ],
            "logits": {"positive": [], "negative": []},
            "neighbours": [{"feature": o, "cosine": c} for _, o, c in neighbours.get(f, ())],
            "cooccurring": [{"feature": o, "count": c, "fraction": x} for _, o, c, x in cooc.get(f, ())],
        }
        for _, sign, _, tid, value in logits.get(f, ()):
            record["logits"]["positive" if sign > 0 else "negative"].append(
                {"token_id": tid, "token": vocab.get(tid, ""), "value": value}
            )
        record["explanations"] = notes.get(f, [])  # as FeatureDB.feature_page: [] without explanations
        yield record


def _feature(row: tuple) -> dict:
    i, n_active, density, mean_act, max_act, hist_max, hist, dnorm = row
    counts = np.frombuffer(hist, dtype="<i8").tolist()
    return {
        "id": i,
        "n_active": n_active,
        "density": density,
        "mean_act": mean_act,
        "max_act": max_act,
        "hist_counts": counts,
        "hist_edges": np.linspace(0.0, hist_max, len(counts) + 1).tolist(),
        "decoder_norm": dnorm,
    }


def _example(r: tuple, vocab: dict[int, str]) -> dict:
    _, kind, interval, rank, value, token_index, context, position, start, ids, acts = r
    tok = np.frombuffer(ids, dtype="<i4").tolist()
    return {
        "interval": interval,
        "rank": rank,
        "value": value,
        "token_index": token_index,
        "context": context,
        "position": position,
        "start": start,
        "highlight": position - start,
        "token_ids": tok,
        "tokens": [vocab.get(t, f"<{t}>") for t in tok],
        "acts": np.frombuffer(acts, dtype="<f4").tolist(),
    }


def _explanations(con: sqlite3.Connection, ids: Iterable[int]) -> dict[int, list[dict]]:
    """Each feature's explanations (``feature`` and the columns of EXPLANATION_FIELDS the table has), best detection
    score first, as FeatureDB.explanations(i) gives them."""
    have = {r[1] for r in con.execute("PRAGMA table_info(explanations)")}
    cols = ["feature", *(c for c in EXPLANATION_FIELDS if c in have)]
    ids = list(ids)
    order = "feature, detection IS NULL, detection DESC, explainer" if "detection" in have else "feature"
    return {
        f: [dict(zip(cols, r)) for r in rows]
        for f, rows in _select(con, ", ".join(cols), "explanations", ids, order).items()
    }
