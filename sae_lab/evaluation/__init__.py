"""Evaluation (faithfulness metrics), feature statistics and the feature database. See README.md here."""

from sae_lab.evaluation.analyze import analyze_run, analyze_sae_dir
from sae_lab.evaluation.config import AnalyzeConfig, EvalConfig
from sae_lab.evaluation.evaluate import evaluate_run, evaluate_sae_dir
from sae_lab.evaluation.feature_db import FeatureDB, FeatureDBError, FeatureQueryError
from sae_lab.evaluation.inputs import SAEMismatchError

__all__ = [
    "AnalyzeConfig",
    "EvalConfig",
    "FeatureDB",
    "FeatureDBError",
    "FeatureQueryError",
    "SAEMismatchError",
    "analyze_run",
    "analyze_sae_dir",
    "evaluate_run",
    "evaluate_sae_dir",
]
