"""The feature database file: round trip, damage detection, query latency at 16k latents."""

import sqlite3
import statistics
import time

import numpy as np
import pytest

from sae_lab.evaluation import FeatureDB, FeatureDBError
from sae_lab.evaluation.feature_db import write_feature_db
from synthetic_db import write_synthetic_db


def _small(path):
    hist = np.arange(4, dtype="<i8")
    ids, acts = np.array([5, 6, 7], dtype="<i4"), np.array([0.0, 2.5, 0.5], dtype="<f4")
    tables = {
        "features": [(0, 3, 0.3, 1.0, 2.5, 4.0, hist.tobytes(), 1.0), (1, 0, 0.0, 0.0, 0.0, 0.0, hist.tobytes(), 1.0)],
        "examples": [(0, "top", -1, 0, 2.5, 41, 1, 9, 8, ids.tobytes(), acts.tobytes())],
        "intervals": [(0, 1, 2.0, 4.0, 3)],
        "logits": [(0, 1, 0, 6, 0.9), (0, -1, 0, 5, -0.4)],
        "neighbours": [(0, 0, 1, 0.25)],
        "cooccurrence": [(0, 0, 1, 2, 2 / 3)],
        "tokens": [(5, " The"), (6, " Paris"), (7, ".")],
    }
    return write_feature_db(path, {"sae": "s", "d_sae": 2, "hook_name": "h"}, tables)


def test_round_trip(tmp_path):
    with FeatureDB(_small(tmp_path / "f.sqlite"), verify="full") as db:
        page = db.feature_page(0)
        assert page["hist_counts"] == [0, 1, 2, 3] and page["hist_edges"] == [0.0, 1.0, 2.0, 3.0, 4.0]
        ex = page["top_examples"][0]
        assert ex["tokens"] == [" The", " Paris", "."] and ex["highlight"] == 1 and ex["acts"] == [0.0, 2.5, 0.5]
        assert page["logits"] == {
            "positive": [{"token_id": 6, "token": " Paris", "value": 0.9}],
            "negative": [{"token_id": 5, "token": " The", "value": -0.4}],
        }
        assert page["neighbours"] == [{"feature": 1, "cosine": 0.25}] and page["cooccurring"][0]["count"] == 2
        assert page["intervals"][0]["count"] == 3 and db.features_with_logit(" Paris") == [
            {"feature": 0, "rank": 0, "value": 0.9, "token_id": 6}
        ]
        assert db.features_with_logit(" Paris", top=False) == [] and db.summary()["n_dead"] == 1
        with pytest.raises(IndexError, match="0..1"):
            db.feature_page(2)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically: no temporary left


def test_truncated_file_is_detected_and_named(tmp_path):
    path = _small(tmp_path / "f.sqlite")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1024])
    with pytest.raises(FeatureDBError, match=r"f\.sqlite.*truncated"):
        FeatureDB(path)
    path.write_bytes(data[:50])
    with pytest.raises(FeatureDBError, match=r"f\.sqlite"):
        FeatureDB(path)


def test_corrupt_file_is_detected_and_named(tmp_path):
    path = _small(tmp_path / "f.sqlite")
    data = bytearray(path.read_bytes())
    page = 4096
    data[2 * page + 8 : 2 * page + 200] = b"\xff" * 192  # damage a b-tree page
    path.write_bytes(bytes(data))
    with pytest.raises(FeatureDBError, match=r"f\.sqlite"):
        FeatureDB(path, verify="full")


def test_incomplete_database_is_refused(tmp_path):
    path = _small(tmp_path / "f.sqlite")
    con = sqlite3.connect(path)
    con.execute("DELETE FROM meta WHERE key = 'complete'")
    con.commit()
    con.close()
    with pytest.raises(FeatureDBError, match=r"f\.sqlite.*incomplete"):
        FeatureDB(path)
    with pytest.raises(FeatureDBError, match="does not exist"):
        FeatureDB(tmp_path / "missing.sqlite")


def test_a_feature_page_loads_in_under_100ms_at_16k_latents(tmp_path):
    path = write_synthetic_db(tmp_path / "big.sqlite", 16_384)
    with FeatureDB(path) as db:
        rng = np.random.default_rng(0)
        times = []
        for i in rng.integers(0, 16_384, 50):
            t = time.perf_counter()
            page = db.feature_page(int(i))
            times.append(time.perf_counter() - t)
            assert len(page["top_examples"]) == 20 and sum(len(iv["examples"]) for iv in page["intervals"]) == 32
        assert statistics.median(times) < 0.1 and max(times) < 0.5
        assert db.features_with_logit(" Paris")  # the logit index answers the reverse query
