"""TopK SAE (Gao et al. 2024): z = TopK_k(ReLU(W_enc (x - b_dec) + b_enc)), with AuxK on dead latents."""

from __future__ import annotations

import torch

from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.registry import register
from sae_lab.saes.sparse_ops import SparseCode


@register("topk")
class TopKSAE(BaseSAE):
    """Keeps the k largest pre-activations of each token (the same rule in training and inference)."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        out = torch.zeros_like(pre) if pre.requires_grad else pre.zero_()  # no autograd: reuse pre's memory
        return out.scatter_(-1, idx, torch.relu(vals))

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        with torch.no_grad():
            pre = self.pre_acts(x)
            vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        code = SparseCode.from_topk(idx, self.cfg.d_sae)
        return self.sparse_training_forward(x, pre, code, vals.reshape(-1))
