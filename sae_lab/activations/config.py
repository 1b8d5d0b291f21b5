"""The config of an activation cache (``sae-lab cache``) and of a live activation stream."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sae_lab.activations.hooks import expand_hooks
from sae_lab.configbase import StrictModel
from sae_lab.data.config import DataConfig
from sae_lab.models import ModelConfig


class ActivationConfig(StrictModel):
    """Which hooks to capture and how activations are prepared (shared by cache and stream)."""

    hooks: list[str] = Field(
        default_factory=lambda: ["blocks.15.hook_resid_post"],
        min_length=1,
        description="hook names, or globs over the model's hooks: blocks.*.hook_resid_post, blocks.[0-3].hook_mlp_out",
    )
    batch_size: int = Field(16, ge=1, description="contexts per forward pass")
    normalize: bool = Field(True, description="estimate a scale so that mean ||x|| = sqrt(d_in)")
    norm_sample_contexts: int = Field(64, ge=1, description="contexts used to estimate scale and median norm")
    exclude_outliers: float | None = Field(
        None,
        gt=1.0,
        description="exclude positions whose ||x|| exceeds this multiple of the median norm (e.g. 10); "
        "the count is recorded in the manifest",
    )

    def expanded(self, available: list[str]) -> "ActivationConfig":
        """This config with its hook globs expanded against ``available`` (the model's hook names, in its order)."""
        hooks = expand_hooks(self.hooks, available, "activations.hooks")
        return self if hooks == self.hooks else self.model_copy(update={"hooks": hooks})


class CacheConfig(StrictModel):
    """Everything ``sae-lab cache`` needs: model, data, hooks and the on-disk layout."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    activations: ActivationConfig = Field(default_factory=ActivationConfig)
    output: str = Field(..., description="the cache directory to create or resume")
    storage_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    shard_contexts: int = Field(128, ge=1, description="contexts per shard file")

    @model_validator(mode="after")
    def _sample_fits(self):
        if self.data.max_contexts is not None and self.activations.norm_sample_contexts > self.data.max_contexts:
            self.activations.norm_sample_contexts = self.data.max_contexts
        return self
