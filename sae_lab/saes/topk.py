"""TopK SAE (Gao et al. 2024): z = TopK_k(ReLU(W_enc (x - b_dec) + b_enc)), with AuxK on dead latents."""

from __future__ import annotations

from typing import Literal

import torch

from sae_lab.configbase import ConfigError
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.config import RevivalConfig
from sae_lab.saes.registry import register
from sae_lab.saes.saelens_format import load_encoder_weights
from sae_lab.saes.sparse_ops import SparseCode


class TopKConfig(RevivalConfig):
    """Options of the TopK SAE: k and the revival (AuxK / aux_zipf) options."""

    architecture: Literal["topk"] = "topk"


@register("topk")
class TopKSAE(BaseSAE):
    """Keeps the k largest pre-activations of each token (the same rule in training and inference)."""

    config_class = TopKConfig
    saelens_loads = ("topk",)

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

    # ---- SAELens mapping --------------------------------------------------------------------------
    @classmethod
    def saelens_architecture(cls, cfg: TopKConfig) -> str | None:
        return "topk"

    @classmethod
    def saelens_fields(cls, cfg: TopKConfig) -> dict:
        return {"k": cfg.k, "activation_fn_kwargs": {"k": cfg.k}, "activation_fn_str": "topk"}

    @classmethod
    def from_saelens(cls, cfg_json: dict, weights: dict[str, torch.Tensor], fields: dict) -> "TopKSAE":
        k = cfg_json.get("k") or (cfg_json.get("activation_fn_kwargs") or {}).get("k")
        if k is None:
            raise ConfigError(f"SAELens topk SAE '{fields['name']}' has no 'k' in cfg.json")
        return load_encoder_weights(cls(TopKConfig(k=int(k), **fields)), cfg_json, weights)
