"""Circuit analysis on TransformerLens 4: splice SAEs at the level of their code, read and edit features,
intervene, attribute (user guide: docs/circuits.md). ``forward_hooks`` keeps the whole-hook splices of evaluation."""

from sae_lab.circuits.attribution import Attribution, patch_effect, validate
from sae_lab.circuits.compare import compare_interventions
from sae_lab.circuits.dfa import DirectFeatureAttribution, direct_feature_attribution
from sae_lab.circuits.edges import edges, validate_edges
from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.features import PromptFeatures, prompt_features
from sae_lab.circuits.forward_hooks import ablation_hooks, replace_hooks, run_with_sae, splice_hooks
from sae_lab.circuits.graph import FeatureGraph
from sae_lab.circuits.interventions import Intervention
from sae_lab.circuits.metrics import logit_diff
from sae_lab.circuits.spliced import Generation, Spliced, SplicedOutput

__all__ = [
    "Attribution",
    "CircuitError",
    "DirectFeatureAttribution",
    "FeatureGraph",
    "Generation",
    "Intervention",
    "PromptFeatures",
    "Spliced",
    "SplicedOutput",
    "ablation_hooks",
    "compare_interventions",
    "direct_feature_attribution",
    "edges",
    "logit_diff",
    "patch_effect",
    "prompt_features",
    "replace_hooks",
    "run_with_sae",
    "splice_hooks",
    "validate",
    "validate_edges",
]
