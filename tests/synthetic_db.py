"""A synthetic feature database with realistic sizes (for query-latency tests and the benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sae_lab.evaluation.feature_db import write_feature_db


def write_synthetic_db(
    path: Path,
    n_features: int = 16_384,
    vocab: int = 49_152,
    top_k: int = 20,
    n_intervals: int = 8,
    per_interval: int = 4,
    window: int = 17,
    n_rel: int = 10,
    bins: int = 32,
    seed: int = 0,
) -> Path:
    """Random contents in the real schema: every feature has full examples, logits, neighbours, co-occurrences."""
    rng = np.random.default_rng(seed)
    F = n_features
    hist = rng.integers(0, 100, size=(F, bins)).astype("<i8")
    ids = rng.integers(0, vocab, size=(F, top_k + n_intervals * per_interval, window)).astype("<i4")
    acts = rng.random(size=ids.shape).astype("<f4")

    def examples():
        for f in range(F):
            for r in range(top_k):
                yield (
                    f,
                    "top",
                    -1,
                    r,
                    float(top_k - r),
                    f * 1000 + r,
                    f,
                    20,
                    8,
                    ids[f, r].tobytes(),
                    acts[f, r].tobytes(),
                )
            for j in range(n_intervals):
                for r in range(per_interval):
                    e = top_k + j * per_interval + r
                    yield (
                        f,
                        "interval",
                        j,
                        r,
                        float(j),
                        f * 1000 + e,
                        f,
                        20,
                        8,
                        ids[f, e].tobytes(),
                        acts[f, e].tobytes(),
                    )

    other = rng.integers(0, F, size=(F, n_rel))
    logit_ids = rng.integers(0, vocab, size=(F, 2, n_rel))
    tables = {
        "features": ((f, 100, 0.01, 1.0, 2.0, 2.0, hist[f].tobytes(), 1.0) for f in range(F)),
        "examples": examples(),
        "intervals": ((f, j, j / 4, (j + 1) / 4, 10) for f in range(F) for j in range(n_intervals)),
        "logits": (
            (f, sign, r, int(logit_ids[f, s, r]), sign * (n_rel - r) * 0.1)
            for f in range(F)
            for s, sign in enumerate((1, -1))
            for r in range(n_rel)
        ),
        "neighbours": ((f, r, int(other[f, r]), 0.5 - r * 0.01) for f in range(F) for r in range(n_rel)),
        "cooccurrence": ((f, r, int(other[f, r]), 100 - r, 0.5) for f in range(F) for r in range(n_rel)),
        "tokens": ((i, " Paris" if i == 1234 else f"tok{i}") for i in range(vocab)),
    }
    meta = {"sae": "synthetic", "hook_name": "blocks.0.hook_resid_post", "d_in": 576, "d_sae": F, "synthetic": True}
    return write_feature_db(path, meta, tables)
