"""Config sections ``eval`` and ``analyze`` of a run's config.yaml."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field, field_validator, model_validator

from sae_lab.configbase import StrictModel
from sae_lab.data.config import DataConfig
from sae_lab.devices import DeviceName


def _validation_data() -> DataConfig:
    return DataConfig(source="embedded", split="validation")


class HeldOutData(StrictModel):
    """Fields shared by eval and analyze: which held-out tokens, how many, in what batches."""

    data: DataConfig = Field(
        default_factory=_validation_data,
        description="held-out text (default: the embedded corpus, split 'validation'); "
        "data.exclude_special masks BOS/EOS/pad positions out of every statistic",
    )
    n_tokens: int = Field(65_536, ge=1, description="tokens to use, rounded up to whole contexts")
    batch_size: int = Field(8, ge=1, description="contexts per model forward pass")
    exclude_outliers: Union[float, Literal["run", "none"]] = Field(
        "run",
        description="also skip positions whose ||x|| exceeds this multiple of the median norm (the median "
        "is taken on the first batch); 'run' uses the run's activations.exclude_outliers, "
        "'none' keeps every position",
    )
    device: DeviceName = Field("auto", description="where SAEs run; 'auto' = the model's device")

    @field_validator("exclude_outliers")
    @classmethod
    def _multiple(cls, v):
        if isinstance(v, float) and v <= 1.0:
            raise ValueError(f"exclude_outliers must be > 1 (a multiple of the median norm), got {v}")
        return v

    @property
    def n_contexts(self) -> int:
        return -(-self.n_tokens // self.data.context_length)


class EvalConfig(HeldOutData):
    """``sae-lab eval``: faithfulness metrics of each SAE on held-out tokens."""

    ce_loss: bool = Field(True, description="compute CE loss / loss recovered / KL (full-model forwards)")
    dense_threshold: float = Field(
        0.1, gt=0, le=1, description="a latent active on more than this fraction of tokens counts as dense"
    )


class AnalyzeConfig(HeldOutData):
    """``sae-lab analyze``: per-feature statistics written to a feature database."""

    n_tokens: int = Field(262_144, ge=1, description="tokens to analyse, rounded up to whole contexts")
    top_k: int = Field(20, ge=1, description="top-activating examples kept per feature")
    context_left: int = Field(12, ge=0, description="tokens shown before the activating token")
    context_right: int = Field(4, ge=0, description="tokens shown after the activating token")
    n_intervals: int = Field(8, ge=1, description="activation intervals for sampled examples (power of 2)")
    samples_per_interval: int = Field(4, ge=1, description="examples sampled per activation interval")
    hist_bins: int = Field(32, ge=2, description="activation histogram bins per feature (power of 2)")
    n_neighbours: int = Field(10, ge=1, description="nearest features by decoder cosine")
    n_cooccurring: int = Field(10, ge=1, description="most frequently co-active features")
    cooc_max_active: int = Field(
        64, ge=1, description="co-occurrence counts pairs among at most this many of a token's largest activations"
    )
    n_logits: int = Field(10, ge=1, description="top positive and negative logit effects per feature")
    checkpoint_every_tokens: int = Field(65_536, ge=1, description="write the resumable streaming state this often")
    resume: bool = Field(True, description="continue from a matching checkpoint of an interrupted analysis")

    @model_validator(mode="after")
    def _powers_of_two(self) -> "AnalyzeConfig":
        for name in ("n_intervals", "hist_bins"):
            v = getattr(self, name)
            if v & (v - 1):
                raise ValueError(f"{name}={v} must be a power of 2 (bins are halved when a feature's range doubles)")
        if self.n_intervals > self.hist_bins:
            raise ValueError(f"n_intervals={self.n_intervals} must not exceed hist_bins={self.hist_bins}")
        return self

    @property
    def window(self) -> int:
        return self.context_left + 1 + self.context_right
