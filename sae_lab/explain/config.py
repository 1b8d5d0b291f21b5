"""Config of ``sae-lab explain``: which features, which explainer/scorer model, how many examples."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import Field, model_validator

from sae_lab.configbase import StrictModel
from sae_lab.devices import DeviceName
from sae_lab.evaluation.config import HeldOutData


class LLMConfig(StrictModel):
    """A chat model that writes or judges explanations: a local Hugging Face causal LM, or an OpenAI-compatible
    chat-completions endpoint (vLLM, llama.cpp's server, an API)."""

    kind: Literal["local", "openai"] = Field(
        "local", description="local: a Hugging Face causal LM run here; openai: an OpenAI-compatible HTTP endpoint"
    )
    model: str = Field(
        "embedded",
        description="local: 'embedded' (SmolLM2-135M-Instruct, offline), a Hugging "
        "Face id or a local model dir; openai: the model name to request",
    )
    base_url: Optional[str] = Field(
        None,
        description="openai: the endpoint's base URL, e.g. "
        "http://127.0.0.1:8000/v1 (POSTs to BASE_URL/chat/completions)",
    )
    api_key_env: Optional[str] = Field(
        None,
        description="openai: the environment variable holding the API key (none: send no key, as local servers allow)",
    )
    batch_size: int = Field(8, ge=1, description="prompts per generate call (local) / requests in flight (openai)")
    max_new_tokens: int = Field(60, ge=1, description="longest explanation, in tokens")
    temperature: float = Field(0.0, ge=0, description="0: greedy (deterministic) decoding")
    timeout_s: float = Field(120.0, gt=0, description="openai: seconds to wait for one response")
    device: DeviceName = Field("auto", description="local: where the model runs")
    dtype: str = Field("float32", pattern="^(float32|bfloat16|float16)$", description="local: model precision")

    @model_validator(mode="after")
    def _endpoint(self) -> "LLMConfig":
        if self.kind == "openai" and not self.base_url:
            raise ValueError("kind=openai needs base_url (e.g. base_url=http://127.0.0.1:8000/v1)")
        return self

    @property
    def label(self) -> str:
        """The name stored with each explanation: 'local:embedded', 'openai:gpt-4o-mini', ..."""
        return f"{self.kind}:{self.model}"


class ExplainConfig(HeldOutData):
    """``sae-lab explain``: explanations of features (and their detection/fuzzing scores) into the feature database.

    The held-out data fields (data, n_tokens, batch_size, exclude_outliers, device) say where the random,
    non-activating contexts for scoring come from; the subject model and SAE run on them once per SAE."""

    features: Union[Literal["alive"], list[int]] = Field(
        "alive", description="'alive' (every feature that fired in the analysis) or a list of ids"
    )
    limit: Optional[int] = Field(
        None, ge=1, description="explain at most this many of the chosen features (lowest ids first)"
    )
    saes: Optional[list[str]] = Field(None, description="a run's SAEs to explain (default: all)")
    explainer: LLMConfig = Field(default_factory=LLMConfig, description="the model that writes explanations")
    scorer: Optional[LLMConfig] = Field(None, description="the model that scores them (default: the explainer)")
    score: bool = Field(True, description="score each explanation by detection and fuzzing")
    baseline: bool = Field(True, description="also score a random other feature's explanation (the floor)")
    n_top: int = Field(10, ge=1, description="top-activating examples shown to the explainer")
    n_interval: int = Field(1, ge=0, description="examples per activation interval shown to the explainer")
    n_score: int = Field(
        5, ge=1, description="held-out activating contexts per score (and as many non-activating ones)"
    )
    examples_per_prompt: int = Field(5, ge=1, description="contexts the scorer judges in one prompt")
    mark_threshold: float = Field(
        0.3, gt=0, le=1, description="mark tokens activating above this fraction of their example's maximum"
    )
    n_tokens: int = Field(8192, ge=1, description="held-out tokens for the random non-activating contexts")
    seed: int = Field(0, ge=0, description="seed of the context samples and the random baseline")
    overwrite: bool = Field(False, description="re-explain features this explainer has already explained")

    @property
    def scorer_model(self) -> LLMConfig:
        return self.scorer or self.explainer


__all__ = ["ExplainConfig", "LLMConfig", "DeviceName"]
