"""JumpReLU SAE (Rajamanoharan et al. 2024; Gemma Scope): z = ReLU(pre) · 1[pre > θ], per-latent thresholds θ.

Inference only: sae-lab loads JumpReLU SAEs (Gemma Scope, SAELens ``jumprelu``) to encode, decode, splice,
intervene and browse them, but does not train them (its threshold-based trainers are Mutual and Feature Choice,
which save their inference rule as this same layout). ``pre = (x - b_dec) W_enc + b_enc`` as everywhere in
sae-lab; a source that does not subtract b_dec (Gemma Scope) is folded into b_enc on loading
(``saelens_format.load_encoder_weights``). For θ >= 0, ReLU(pre) · 1[pre > θ] = pre · 1[pre > θ], Gemma Scope's
published definition.
"""

from __future__ import annotations

from typing import Literal

import torch

from sae_lab.configbase import ConfigError
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.config import SAEConfig
from sae_lab.saes.registry import register, registered_names
from sae_lab.saes.saelens_format import load_encoder_weights


class JumpReLUConfig(SAEConfig):
    """Options of the JumpReLU SAE: only the shared shape/hook/name ones (the thresholds are weights)."""

    architecture: Literal["jumprelu"] = "jumprelu"

    def check_batch_size(self, batch_size: int) -> None:
        raise ConfigError(
            f"architecture 'jumprelu' is inference-only in sae-lab (it loads Gemma Scope and SAELens "
            f"JumpReLU SAEs, it does not train them); train one of: {', '.join(registered_names())}"
        )


@register("jumprelu", trainable=False)
class JumpReLUSAE(BaseSAE):
    """Per-latent thresholds θ: a latent is active where its pre-activation exceeds θ_i."""

    config_class = JumpReLUConfig
    activation_buffers = ("threshold",)  # in activation units: divided by s when folding
    saelens_loads = ("jumprelu",)

    def __init__(self, cfg: JumpReLUConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        return torch.relu(pre) * (pre > self.threshold)

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        self.cfg.check_batch_size(x.shape[0])  # raises: inference only
        raise AssertionError("unreachable")

    # ---- SAELens mapping --------------------------------------------------------------------------
    @classmethod
    def saelens_architecture(cls, cfg: JumpReLUConfig) -> str | None:
        return "jumprelu"

    @classmethod
    def from_saelens(cls, cfg_json: dict, weights: dict[str, torch.Tensor], fields: dict) -> "JumpReLUSAE":
        """A SAELens JumpReLU SAE (``threshold``, or ``log_threshold`` in older files)."""
        sae = load_encoder_weights(cls(JumpReLUConfig(**fields)), cfg_json, weights)
        with torch.no_grad():
            sae.threshold.copy_(weights["threshold"] if "threshold" in weights else weights["log_threshold"].exp())
        return sae
