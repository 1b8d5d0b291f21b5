"""Standard ReLU SAE (SAELens 'standard'): z = ReLU(W_enc (x - b_dec) + b_enc), L1 penalty z_i ||d_i||.

Mainly here so SAELens 'standard' SAEs load into sae-lab; it also trains (``l1_coef``).

This file is the template for a new architecture: copy it to one new file in this folder, rename the
architecture, its config and its class, and change the rules. Everything else (config validation, the CLI's
help, saving, loading, the contract tests) picks it up from the registration below.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from sae_lab.distributed import global_rows
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.config import SAEConfig
from sae_lab.saes.registry import register
from sae_lab.saes.saelens_format import load_encoder_weights


class StandardConfig(SAEConfig):
    """Options of the standard ReLU SAE (plus the shared shape/hook/name/dead-latent options)."""

    architecture: Literal["standard"] = "standard"
    l1_coef: float = Field(5.0, ge=0, description="'standard': L1 weight on z_i * ||d_i||")


@register("standard")
class StandardSAE(BaseSAE):
    """Dense ReLU encoder; sparsity comes from the L1 term returned as aux_losses['l1']."""

    config_class = StandardConfig
    saelens_loads = ("standard",)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_acts(x))

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        z = self.encode(x)
        x_hat = self.decode(z)
        l1 = self.cfg.l1_coef * (z * self.W_dec.norm(dim=1)).sum() / global_rows(x.shape[0])
        with torch.no_grad():
            fired = (z > 0).sum(0)
            l0 = float(fired.sum()) / x.shape[0]  # before update_stats sums fired over ranks
            self.update_stats(fired, x.shape[0])
        return TrainOutput(x_hat, {"l1": l1}, fired, l0)

    # ---- SAELens mapping --------------------------------------------------------------------------
    @classmethod
    def saelens_architecture(cls, cfg: StandardConfig) -> str | None:
        return "standard"

    @classmethod
    def from_saelens(cls, cfg_json: dict, weights: dict[str, torch.Tensor], fields: dict) -> "StandardSAE":
        return load_encoder_weights(cls(StandardConfig(**fields)), cfg_json, weights)
