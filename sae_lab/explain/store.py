"""The writer of explanations into a feature database: one committed row at a time, resumable after kill -9.

Opening checks the database (as ``FeatureDB`` does), adds the explanations tables if they are missing
(``feature_db.migrate_explanations``) and marks the file as being modified, so readers skip its now-stale
SHA-256; closing records the new SHA-256. Every row is its own durable transaction (rollback journal,
synchronous=FULL): a killed run loses at most the row it was writing, and that one is rolled back on the next open.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sae_lab.evaluation.feature_db import FeatureDB, begin_modification, end_modification, migrate_explanations


class ExplanationStore:
    """Add and score explanations in the feature database at ``path`` (use as a context manager)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        FeatureDB(self.path).close()  # the checks of a reader (rolls back a killed writer's unfinished row)
        begin_modification(self.path, "sae-lab explain")
        self.con = sqlite3.connect(self.path, isolation_level=None)
        try:
            self.con.execute("PRAGMA journal_mode=DELETE")
            self.con.execute("PRAGMA synchronous=FULL")
            migrate_explanations(self.con, self.path)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.con.close()
        end_modification(self.path)

    def __enter__(self) -> "ExplanationStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def explained(self, explainer: str) -> dict[int, str]:
        """feature -> explanation, of every feature ``explainer`` has explained."""
        return dict(self.con.execute("SELECT feature, explanation FROM explanations WHERE explainer = ?", (explainer,)))

    def unscored(self, explainer: str) -> list[int]:
        return [
            r[0]
            for r in self.con.execute(
                "SELECT feature FROM explanations WHERE explainer = ? AND scored IS NULL ORDER BY feature", (explainer,)
            )
        ]

    def put(self, feature: int, explainer: str, explanation: str, raw: str, prompt: str, n_examples: int) -> None:
        """Write (or replace) one explanation, committed; a replaced one loses its scores."""
        self.con.execute("BEGIN IMMEDIATE")
        self.con.execute("DELETE FROM explanations WHERE feature = ? AND explainer = ?", (feature, explainer))
        self.con.execute(
            "INSERT INTO explanations (feature, explainer, explanation, raw, prompt, n_examples, "
            "created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (feature, explainer, explanation, raw, prompt, n_examples, time.time()),
        )
        self.con.execute("COMMIT")

    def put_scores(self, feature: int, explainer: str, scorer: str, scores: dict) -> None:
        """Store the scores of one explanation, committed. ``scores`` maps 'detection', 'fuzzing',
        'detection_random', 'fuzzing_random' to Score records (balanced_accuracy, n_contexts, n_unparsed)."""
        values, unparsed = {}, 0
        for name in ("detection", "fuzzing", "detection_random", "fuzzing_random"):
            s = scores.get(name)
            values[name], values[f"{name}_n"] = (s.balanced_accuracy, s.n_contexts) if s else (None, None)
            unparsed += s.n_unparsed if s else 0
        sets = ", ".join(f"{k} = ?" for k in values)
        self.con.execute(
            f"UPDATE explanations SET scorer = ?, {sets}, n_unparsed = ?, scored = ? WHERE feature = ? "
            "AND explainer = ?",
            (scorer, *values.values(), unparsed, time.time(), feature, explainer),
        )
