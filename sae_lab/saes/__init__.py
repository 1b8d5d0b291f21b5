"""SAE architectures behind one contract (see CONTRACT.md). Importing this package registers them all."""

from sae_lab.saes import feature_choice, matching_pursuit, mutual_choice, relu, topk  # noqa: F401  (registration)
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.config import SAEConfig
from sae_lab.saes.registry import build_sae, get_sae_class, register, registered_names

__all__ = ["BaseSAE", "TrainOutput", "SAEConfig", "build_sae", "get_sae_class", "register", "registered_names"]
