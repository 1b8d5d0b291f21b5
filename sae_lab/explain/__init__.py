"""Feature explanations: explain features with a chat model, score the explanations (detection, fuzzing), store
both in the feature database, where ``FeatureDB.search`` finds features by the words of their explanations."""

from sae_lab.explain.config import ExplainConfig, LLMConfig
from sae_lab.explain.llm import ExplainError
from sae_lab.explain.run import explain_run, explain_sae_dir

__all__ = ["ExplainConfig", "LLMConfig", "ExplainError", "explain_run", "explain_sae_dir"]
