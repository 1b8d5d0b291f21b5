"""Parquet export: one SAE's feature database as tables for pandas, Polars or DuckDB, written in row groups of
``batch`` features (bounded memory at any width).

    features.parquet      one row per feature: density, activation statistics, histogram, top +/- logits,
                          decoder-cosine neighbours, co-occurring features, the top example's activating token
                          (and its explanation when the database has them)
    examples.parquet      one row per stored example: kind ('top' / 'interval'), rank, value, the window's tokens
                          and this feature's activation on each token
    logits.parquet        one row per (feature, sign, rank): the logit effects in long form
    explanations.parquet  one row per explanation with its scores (only when the database has explanations)

Each file's schema metadata holds the database's meta (``sae_lab`` key, JSON): SAE, hook, model, analysis data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sae_lab.evaluation.feature_db import FeatureDB
from sae_lab.export.records import BATCH, EXPLANATION_FIELDS, has_explanations, iter_records

I32, I64, F32, F64, STR = pa.int32(), pa.int64(), pa.float32(), pa.float64(), pa.string()
FEATURES = pa.schema(
    [
        ("feature", I32),
        ("n_active", I64),
        ("density", F64),
        ("mean_act", F64),
        ("max_act", F64),
        ("decoder_norm", F64),
        ("hist_max", F64),
        ("hist", pa.list_(I64)),
        ("top_logit_tokens", pa.list_(STR)),
        ("top_logit_token_ids", pa.list_(I32)),
        ("top_logit_values", pa.list_(F32)),
        ("bottom_logit_tokens", pa.list_(STR)),
        ("bottom_logit_token_ids", pa.list_(I32)),
        ("bottom_logit_values", pa.list_(F32)),
        ("neighbours", pa.list_(I32)),
        ("neighbour_cosines", pa.list_(F32)),
        ("cooccurring", pa.list_(I32)),
        ("cooccurring_counts", pa.list_(I64)),
        ("cooccurring_fractions", pa.list_(F32)),
        ("top_token", STR),
    ]
)
EXAMPLES = pa.schema(
    [
        ("feature", I32),
        ("kind", STR),
        ("interval", I32),
        ("rank", I32),
        ("value", F32),
        ("token_index", I64),
        ("context", I64),
        ("position", I32),
        ("highlight", I32),
        ("tokens", pa.list_(STR)),
        ("token_ids", pa.list_(I32)),
        ("acts", pa.list_(F32)),
    ]
)
LOGITS = pa.schema(
    [("feature", I32), ("sign", pa.int8()), ("rank", I32), ("token_id", I32), ("token", STR), ("value", F32)]
)
EXPLANATION_TYPES = {
    "n_examples": I64,
    "detection_n": I64,
    "fuzzing_n": I64,
    "detection_random_n": I64,
    "fuzzing_random_n": I64,
    "n_unparsed": I64,
    "explainer": STR,
    "explanation": STR,
    "prompt": STR,
    "scorer": STR,
}  # the rest are floats


def feature_row(rec: dict) -> dict:
    pos, neg = rec["logits"]["positive"], rec["logits"]["negative"]
    top = rec["top_examples"][0] if rec["top_examples"] else None
    return {
        "feature": rec["id"],
        "n_active": rec["n_active"],
        "density": rec["density"],
        "mean_act": rec["mean_act"],
        "max_act": rec["max_act"],
        "decoder_norm": rec["decoder_norm"],
        "hist_max": rec["hist_edges"][-1],
        "hist": rec["hist_counts"],
        "top_logit_tokens": [t["token"] for t in pos],
        "top_logit_token_ids": [t["token_id"] for t in pos],
        "top_logit_values": [t["value"] for t in pos],
        "bottom_logit_tokens": [t["token"] for t in neg],
        "bottom_logit_token_ids": [t["token_id"] for t in neg],
        "bottom_logit_values": [t["value"] for t in neg],
        "neighbours": [n["feature"] for n in rec["neighbours"]],
        "neighbour_cosines": [n["cosine"] for n in rec["neighbours"]],
        "cooccurring": [c["feature"] for c in rec["cooccurring"]],
        "cooccurring_counts": [c["count"] for c in rec["cooccurring"]],
        "cooccurring_fractions": [c["fraction"] for c in rec["cooccurring"]],
        "top_token": top["tokens"][top["highlight"]] if top else None,
        **(
            {"explanation": rec["explanations"][0]["explanation"] if rec["explanations"] else None}
            if "explanations" in rec
            else {}
        ),
    }


def example_rows(rec: dict) -> list[dict]:
    every = [("top", e) for e in rec["top_examples"]] + [
        ("interval", e) for iv in rec["intervals"] for e in iv["examples"]
    ]
    return [
        {
            "feature": rec["id"],
            "kind": kind,
            **{
                k: e[k]
                for k in (
                    "interval",
                    "rank",
                    "value",
                    "token_index",
                    "context",
                    "position",
                    "highlight",
                    "tokens",
                    "token_ids",
                    "acts",
                )
            },
        }
        for kind, e in every
    ]


def logit_rows(rec: dict) -> list[dict]:
    return [
        {"feature": rec["id"], "sign": sign, "rank": r, **t}
        for key, sign in (("positive", 1), ("negative", -1))
        for r, t in enumerate(rec["logits"][key])
    ]


def explanation_schema(columns: list[str]) -> pa.Schema:
    return pa.schema([("feature", I32), *[(c, EXPLANATION_TYPES.get(c, F64)) for c in columns]])


def write_parquet(
    db: FeatureDB, name: str, directory: Path, features: list[int] | None = None, batch: int = BATCH
) -> dict:
    """Write one SAE's tables into ``directory`` (see the module docstring); returns the row count of each file."""
    meta = {b"sae_lab": json.dumps({k: v for k, v in db.meta.items() if k != "complete"}, default=str).encode()}
    explained = has_explanations(db.con)
    schemas = {
        "features": FEATURES.append(pa.field("explanation", STR)) if explained else FEATURES,
        "examples": EXAMPLES,
        "logits": LOGITS,
    }
    if explained:
        have = {r[1] for r in db.con.execute("PRAGMA table_info(explanations)")}
        schemas["explanations"] = explanation_schema([c for c in EXPLANATION_FIELDS if c in have])
    writers = {k: pq.ParquetWriter(directory / f"{k}.parquet", s.with_metadata(meta)) for k, s in schemas.items()}
    counts = dict.fromkeys(writers, 0)
    try:
        rows: dict[str, list[dict]] = {k: [] for k in writers}
        for i, rec in enumerate(iter_records(db, features, batch=batch), 1):
            rows["features"].append(feature_row(rec))
            rows["examples"] += example_rows(rec)
            rows["logits"] += logit_rows(rec)
            if explained:
                rows["explanations"] += [{"feature": rec["id"], **e} for e in rec["explanations"]]
            if i % batch == 0:
                _flush(writers, rows, schemas, counts)
        _flush(writers, rows, schemas, counts)
    finally:
        for w in writers.values():
            w.close()
    return {"rows": counts, "files": [f"{k}.parquet" for k in writers]}


def _flush(writers: dict, rows: dict[str, list[dict]], schemas: dict, counts: dict) -> None:
    """One row group per table from the rows gathered so far."""
    for k, w in writers.items():
        if rows[k]:
            w.write_table(pa.Table.from_pylist(rows[k], schema=schemas[k]))
            counts[k] += len(rows[k])
            rows[k].clear()
