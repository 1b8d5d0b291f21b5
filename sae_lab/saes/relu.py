"""Standard ReLU SAE (SAELens 'standard'): z = ReLU(W_enc (x - b_dec) + b_enc), L1 penalty z_i ||d_i||.

Mainly here so SAELens 'standard' SAEs load into sae-lab; it also trains (``l1_coef``)."""

from __future__ import annotations

import torch

from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.registry import register


@register("standard")
class StandardSAE(BaseSAE):
    """Dense ReLU encoder; sparsity comes from the L1 term returned as aux_losses['l1']."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pre_acts(x))

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        z = self.encode(x)
        x_hat = self.decode(z)
        l1 = self.cfg.l1_coef * (z * self.W_dec.norm(dim=1)).sum(-1).mean()
        with torch.no_grad():
            fired = (z > 0).sum(0)
            self.update_stats(fired, x.shape[0])
        return TrainOutput(x_hat, {"l1": l1}, fired, float(fired.sum()) / x.shape[0])
