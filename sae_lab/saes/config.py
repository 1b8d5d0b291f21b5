"""SAEConfig: one validated config for every architecture (options irrelevant to an architecture are ignored)."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, model_validator

from sae_lab.configbase import ConfigError, StrictModel
from sae_lab.saes.registry import KNOWN_ARCHITECTURES


class SAEConfig(StrictModel):
    """Architecture, shape and options of one SAE. ``d_sae`` or ``expansion_factor`` must be given."""

    architecture: str = Field(description=f"one of {', '.join(KNOWN_ARCHITECTURES)}")
    d_in: int = Field(gt=0)
    d_sae: int | None = Field(None, gt=0, description="number of latents; or give expansion_factor")
    expansion_factor: int | None = Field(None, gt=0, description="d_sae = expansion_factor * d_in")
    k: int | None = Field(None, gt=0, description="mean active latents per token (unused by 'standard')")
    hook_name: str = ""
    name: str | None = Field(None, description="label in a sweep; default '<architecture>_k<k>'")
    # dead / underutilised latents
    dead_tokens: int = Field(1_000_000, gt=0, description="a latent is dead after this many tokens without firing")
    aux_k: int | None = Field(None, gt=0, description="latents used by AuxK (default d_in // 2, capped at d_sae)")
    aux_coef: float = Field(1 / 32, ge=0, description="AuxK weight; 0 disables AuxK")
    aux_zipf: bool = Field(False, description="add aux_zipf_loss on underutilised latents")
    aux_zipf_coef: float = Field(1 / 32, ge=0)
    zipf_alpha: Union[float, Literal["fit"]] = Field(1.0, description="Zipf exponent, or 'fit' to the density EMA")
    zipf_tolerance: float = Field(0.5, gt=0, le=1, description="underutilised: density < tolerance * Zipf density")
    density_momentum: float = Field(0.01, gt=0, le=1, description="per-step EMA rate of the latent density")
    # choice SAEs
    threshold_momentum: float = Field(0.01, gt=0, le=1, description="per-step EMA rate of inference thresholds")
    capacity_rule: Literal["uniform", "zipf"] = "uniform"
    min_capacity: int = Field(1, ge=0, description="feature choice: least tokens a latent may take per batch")
    # matching pursuit
    mp_nonneg: bool = Field(True, description="select the largest positive inner product; coefficients >= 0")
    mp_update: Literal["gram", "full"] = Field("gram", description="correlation update: Gram matrix or recompute")
    mp_stop: Literal["fixed", "relative", "absolute"] = Field("fixed", description="inference stopping rule")
    mp_threshold: float = Field(0.0, ge=0, description="stop when ||r|| < threshold (* ||x - b_dec|| if relative)")
    mp_k_max: int | None = Field(None, gt=0, description="inference step cap (default k)")
    mp_stop_on_repeat: bool = Field(False, description="inference: stop a token after a step that leaves its support "
                                    "unchanged (an atom picked again, or a zero coefficient); SAELens's "
                                    "stop_on_duplicate_support")
    # standard ReLU SAE
    l1_coef: float = Field(5.0, ge=0, description="'standard': L1 weight on z_i * ||d_i||")

    @model_validator(mode="after")
    def _check(self) -> "SAEConfig":
        if self.architecture not in KNOWN_ARCHITECTURES:
            raise ValueError(f"architecture '{self.architecture}' is unknown; allowed: {', '.join(KNOWN_ARCHITECTURES)}")
        if self.d_sae is None and self.expansion_factor is None:
            raise ValueError("give d_sae (number of latents) or expansion_factor (d_sae = expansion_factor * d_in)")
        d_sae = self.d_sae if self.d_sae is not None else self.expansion_factor * self.d_in
        if self.d_sae is not None and self.expansion_factor is not None and d_sae != self.expansion_factor * self.d_in:
            raise ValueError(f"d_sae={d_sae} contradicts expansion_factor={self.expansion_factor} * d_in={self.d_in}")
        if self.k is None and self.architecture != "standard":
            raise ValueError(f"k is required for architecture '{self.architecture}' (an integer in [1, d_sae={d_sae}])")
        if self.k is not None and self.k > d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={d_sae}; k must be in [1, {d_sae}]")
        if self.aux_k is not None and self.aux_k > d_sae:
            raise ValueError(f"aux_k={self.aux_k} exceeds d_sae={d_sae}; aux_k must be in [1, {d_sae}]")
        if isinstance(self.zipf_alpha, float) and not 0 <= self.zipf_alpha <= 4:
            raise ValueError(f"zipf_alpha={self.zipf_alpha} must be in [0, 4] or 'fit'")
        if self.mp_stop == "relative" and self.mp_threshold >= 1:
            raise ValueError(f"mp_threshold={self.mp_threshold} with mp_stop='relative' must be in [0, 1)")
        object.__setattr__(self, "d_sae", d_sae)
        object.__setattr__(self, "expansion_factor", None)
        if self.name is None:
            object.__setattr__(self, "name", f"{self.architecture}_k{self.k}" if self.k else self.architecture)
        return self

    @property
    def mp_inference_steps(self) -> int:
        """Matching pursuit's step cap at inference: k, or mp_k_max (default k) when a stopping rule can end a
        token earlier."""
        adaptive = self.mp_stop != "fixed" or self.mp_stop_on_repeat
        return (self.mp_k_max or self.k) if adaptive else self.k

    @property
    def resolved_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.d_in // 2, self.d_sae))

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ConfigError if this SAE cannot train on batches of ``batch_size`` tokens."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if self.architecture == "feature_choice":
            budget, need = self.k * batch_size, self.min_capacity * self.d_sae
            if need > budget:
                raise ConfigError(
                    f"capacity_rule '{self.capacity_rule}': min_capacity={self.min_capacity} * d_sae={self.d_sae} = {need} "
                    f"exceeds the budget k*batch_size = {budget}; use batch_size >= {-(-need // self.k)} "
                    f"or min_capacity <= {budget // self.d_sae}"
                )
