"""Circuit tools: splicing SAEs into the model, ablations (attribution and interventions build on these)."""

from sae_lab.circuits.splice import ablation_hooks, replace_hooks, run_with_sae, splice_hooks

__all__ = ["ablation_hooks", "replace_hooks", "run_with_sae", "splice_hooks"]
