"""TopK SAE (Gao et al. 2024): z = TopK_k(ReLU(W_enc (x - b_dec) + b_enc)), with AuxK on dead latents.

Option ``selection: gradient`` makes it a g-SAE (Olmo et al. 2024, "Features that Make a Difference", arXiv
2411.10397): in training the k latents are chosen by their pre-activation z_i plus ``grad_beta`` times the latent's
first-order effect on the language model's loss, z_i |d_i · ∂L/∂x| (``gradient_scores``); the values kept are
still ReLU(z_i). Inference has no gradient and uses plain TopK (see sae_lab/saes/README.md, "g-SAE").
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from sae_lab.configbase import ConfigError
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.config import RevivalConfig
from sae_lab.saes.registry import register
from sae_lab.saes.saelens_format import load_encoder_weights
from sae_lab.saes.sparse_ops import SparseCode

DEFAULT_GRAD_BETA = 1.0


class TopKConfig(RevivalConfig):
    """Options of the TopK SAE: k, the revival (AuxK / aux_zipf) options and the training selection rule."""

    architecture: Literal["topk"] = "topk"
    selection: Literal["activation", "gradient"] = Field(
        "activation",
        description="how training picks the k latents: 'activation' (largest pre-activations) or "
        "'gradient' (g-SAE: pre-activation plus grad_beta times its first-order effect on the LM loss; trains "
        "from a live stream with gradients, cache: null)",
    )
    grad_beta: float | None = Field(
        None, ge=0, description=f"g-SAE's beta (default {DEFAULT_GRAD_BETA}); only with selection: gradient"
    )

    @classmethod
    def default_name(cls, data: dict) -> str:
        kind = "topk_grad" if data.get("selection") == "gradient" else "topk"
        return f"{kind}_k{data.get('k')}"

    @model_validator(mode="after")
    def _check_selection(self) -> "TopKConfig":
        if self.grad_beta is not None and self.selection != "gradient":
            raise ValueError(
                f"grad_beta={self.grad_beta} applies only to selection: gradient (g-SAE); "
                "set selection: gradient or remove grad_beta"
            )
        return self

    @property
    def resolved_grad_beta(self) -> float:
        return DEFAULT_GRAD_BETA if self.grad_beta is None else self.grad_beta


def gradient_scores(pre: torch.Tensor, grad: torch.Tensor, W_dec: torch.Tensor, beta: float) -> torch.Tensor:
    """g-SAE's selection scores ``[B, d_sae]``: s = z + beta · z ⊙ |W_dec ∂L/∂x| (Olmo et al. 2024).

    ``pre`` is z, the pre-activations ``[B, d_sae]``; ``grad`` is ∂L/∂x at the same rows ``[B, d_in]``, in the units
    the SAE sees; row i of ``W_dec`` is latent i's direction d_i, so (W_dec ∂L/∂x)_i = d_i · ∂L/∂x is the change of L
    per unit of latent i and z_i |d_i · ∂L/∂x| its first-order effect. s = z (1 + beta |d · g|) keeps z's sign: a
    latent with z_i <= 0 never outranks one with z_i > 0, and beta = 0 or a zero gradient gives plain TopK.
    """
    effect = (grad.to(W_dec.dtype) @ W_dec.t()).abs_()
    return pre + beta * pre * effect


@register("topk")
class TopKSAE(BaseSAE):
    """Keeps the k largest pre-activations of each token. With ``selection: gradient`` (g-SAE) training ranks them
    by ``gradient_scores`` instead; inference is the same plain TopK either way."""

    config_class = TopKConfig
    saelens_loads = ("topk",)
    # with a relative encoder eps of 2 its rare latents survive 2x the base auto lr, where its FVU is best at 2,304 and
    # 4,608 latents with <= 2% dead held out (BENCHMARKS.md §13, "The cause: Adam's full-size steps for rare latents")
    auto_lr_scale = 2.0
    auto_encoder_eps_ratio = 2.0

    @property
    def needs_gradients(self) -> bool:
        return self.cfg.selection == "gradient"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        out = torch.zeros_like(pre) if pre.requires_grad else pre.zero_()  # no autograd: reuse pre's memory
        return out.scatter_(-1, idx, torch.relu(vals))

    def training_forward(self, x: torch.Tensor, grad: torch.Tensor | None = None) -> TrainOutput:
        """The training rule; ``grad`` (∂L/∂x at the rows of ``x``) is required with ``selection: gradient``."""
        with torch.no_grad():
            pre = self.pre_acts(x)
            if self.needs_gradients:
                scores = gradient_scores(pre, self._checked_grad(grad, x), self.W_dec, self.cfg.resolved_grad_beta)
                idx = scores.topk(self.cfg.k, dim=-1, sorted=False).indices
                vals = pre.gather(-1, idx)
            else:
                vals, idx = pre.topk(self.cfg.k, dim=-1, sorted=False)
        code = SparseCode.from_topk(idx, self.cfg.d_sae)
        return self.sparse_training_forward(x, pre, code, vals.reshape(-1))

    def _checked_grad(self, grad: Any, x: torch.Tensor) -> torch.Tensor:
        if grad is None:
            raise ConfigError(
                f"SAE '{self.name}' has selection: gradient (g-SAE), which needs the LM loss's gradient at every "
                "training row, but the batch came without one. Train it from a live stream with gradients "
                "(a run config with cache: null, or sae_lab.activations.grad_stream.GradientStreamingSource), "
                "or set selection: activation"
            )
        if grad.shape != x.shape:
            raise ConfigError(
                f"SAE '{self.name}': the gradient has shape {tuple(grad.shape)} but the batch has "
                f"{tuple(x.shape)}; give one gradient row per activation row"
            )
        return grad

    # ---- SAELens mapping (the inference rule is plain TopK for both selections) --------------------
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
