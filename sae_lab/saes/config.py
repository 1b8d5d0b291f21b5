"""SAE configs: the options every architecture shares (``SAEConfig``) and the k-sparse ones (``SparseConfig``).

Each architecture's file subclasses one of them with ``architecture: Literal["<name>"]`` and its own options,
and names it as its SAE class's ``config_class``. ``SAEConfig(...)`` and ``SAEConfig.model_validate(...)``
dispatch on ``architecture`` to that class, so callers never name it. An option that belongs to another
architecture is refused, naming the architecture(s) it belongs to.

``d_in`` may be left out (None) while a config is not bound to data (a run config's ``saes:`` entries take it
from the activation source: :meth:`SAEConfig.bind`); building an SAE needs it.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from sae_lab.configbase import ConfigError, StrictModel
from sae_lab.saes import registry

DEAD_TOKENS_CAP = 10_000_000  # OpenAI's and eai-sparsify's dead-latent window, for runs of billions of tokens


class SAEConfig(StrictModel):
    """Shape, hook, name and dead-latent tracking of one SAE. ``d_sae`` or ``expansion_factor`` must be given."""

    architecture: str = Field(description="a registered architecture (see sae_lab.saes.registered_names())")
    d_in: int | None = Field(None, gt=0, description="activation width (default: that of the activation source)")
    d_sae: int | None = Field(None, gt=0, description="number of latents; or give expansion_factor")
    expansion_factor: int | None = Field(None, gt=0, description="d_sae = expansion_factor * d_in")
    hook_name: str = ""
    name: str | None = Field(None, description="label in a sweep; default '<architecture>_k<k>'")
    dead_tokens: Annotated[int, Field(gt=0)] | Literal["auto"] = Field(
        "auto",
        description="a latent is dead after this many tokens without firing (AuxK revives dead latents); "
        "'auto': a tenth of the training run, at most 10M (sae_lab.training.config.auto_dead_tokens)",
    )
    density_momentum: float = Field(0.01, gt=0, le=1, description="per-step EMA rate of the latent density")

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is SAEConfig and kwargs:  # SAEConfig(architecture=..., ...) builds that architecture's config
            return _config_class(kwargs.get("architecture"))(**kwargs)
        return super().__new__(cls)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> "SAEConfig":
        if cls is SAEConfig and isinstance(obj, dict):
            return _config_class(obj.get("architecture")).model_validate(obj, **kwargs)
        return super().model_validate(obj, **kwargs)

    @classmethod
    def config_class_for(cls, data: Any) -> type["SAEConfig"]:
        """The config class that validates ``data``: on SAEConfig itself, that of its architecture."""
        return _config_class(data.get("architecture")) if cls is SAEConfig and isinstance(data, dict) else cls

    @model_validator(mode="before")
    @classmethod
    def _resolve(cls, data: Any) -> Any:
        """Refuse other architectures' options; resolve d_sae from expansion_factor; default the name."""
        if not isinstance(data, dict) or cls is SAEConfig:
            return data
        data = {**data}
        arch = data.setdefault("architecture", cls.model_fields["architecture"].default)
        for key in data:
            if key not in cls.model_fields:
                owners = [n for n, c in registry.config_classes().items() if key in c.model_fields]
                if owners:
                    raise ValueError(
                        f"'{key}' is an option of architecture {', '.join(owners)}, "
                        f"not of '{arch}'; remove it (options of '{arch}': {', '.join(cls.model_fields)})"
                    )
        d_in, d_sae, factor = data.get("d_in"), data.get("d_sae"), data.get("expansion_factor")
        if isinstance(d_in, int) and isinstance(factor, int):
            if d_sae is not None and d_sae != factor * d_in:
                raise ValueError(f"d_sae={d_sae} contradicts expansion_factor={factor} * d_in={d_in}")
            data["d_sae"], data["expansion_factor"] = factor * d_in, None
        if data.get("name") is None:
            data["name"] = cls.default_name(data)
        return data

    @classmethod
    def default_name(cls, data: dict) -> str:
        return str(data.get("architecture"))

    @model_validator(mode="after")
    def _check_shape(self) -> "SAEConfig":
        if self.d_sae is None and self.expansion_factor is None:
            raise ValueError("give d_sae (number of latents) or expansion_factor (d_sae = expansion_factor * d_in)")
        return self

    def bind(self, d_in: int, hook_name: str) -> "SAEConfig":
        """This config with ``d_in`` and ``hook_name`` filled in where it leaves them open (validated again)."""
        data = self.model_dump()
        data["d_in"] = self.d_in if self.d_in is not None else d_in
        data["hook_name"] = self.hook_name or hook_name
        return type(self).model_validate(data)

    @property
    def dead_window(self) -> int:
        """``dead_tokens`` in tokens; 'auto' left unresolved (an SAE trained outside the trainer) means the cap."""
        return DEAD_TOKENS_CAP if self.dead_tokens == "auto" else self.dead_tokens

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ConfigError if this SAE cannot train on batches of ``batch_size`` tokens."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")


class SparseConfig(SAEConfig):
    """The options of k-sparse architectures (TopK, the choice SAEs, matching pursuit): ``k`` is required."""

    k: int = Field(gt=0, description="mean active latents per token")

    @classmethod
    def default_name(cls, data: dict) -> str:
        return f"{data.get('architecture')}_k{data.get('k')}"

    @model_validator(mode="before")
    @classmethod
    def _require_k(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("k") is None:
            unknown = [str(key) for key in data if key not in cls.model_fields]
            close = [m for key in unknown for m in difflib.get_close_matches(key, list(cls.model_fields), n=1)]
            hint = f"; unknown key(s) {', '.join(unknown)}" if unknown else ""
            hint += f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(
                f"k is required for architecture '{data.get('architecture')}' (an integer in [1, d_sae]){hint}"
            )
        return data

    @model_validator(mode="after")
    def _check_k(self) -> "SparseConfig":
        if self.d_sae is not None and self.k > self.d_sae:
            raise ValueError(f"k={self.k} exceeds d_sae={self.d_sae}; k must be in [1, {self.d_sae}]")
        return self


class RevivalConfig(SparseConfig):
    """k-sparse encoder SAEs that revive latents: AuxK on dead latents, aux_zipf on underutilised ones."""

    aux_k: int | None = Field(None, gt=0, description="latents used by AuxK (default d_in // 2, capped at d_sae)")
    aux_coef: float = Field(1 / 32, ge=0, description="AuxK weight; 0 disables AuxK")
    aux_zipf: bool = Field(False, description="add aux_zipf_loss on underutilised latents")
    aux_zipf_coef: float = Field(1 / 32, ge=0)
    zipf_alpha: Union[float, Literal["fit"]] = Field(1.0, description="Zipf exponent, or 'fit' to the density EMA")
    zipf_tolerance: float = Field(0.5, gt=0, le=1, description="underutilised: density < tolerance * Zipf density")

    @model_validator(mode="after")
    def _check_revival(self) -> "RevivalConfig":
        if self.aux_k is not None and self.d_sae is not None and self.aux_k > self.d_sae:
            raise ValueError(f"aux_k={self.aux_k} exceeds d_sae={self.d_sae}; aux_k must be in [1, {self.d_sae}]")
        if isinstance(self.zipf_alpha, float) and not 0 <= self.zipf_alpha <= 4:
            raise ValueError(f"zipf_alpha={self.zipf_alpha} must be in [0, 4] or 'fit'")
        return self

    @property
    def resolved_aux_k(self) -> int:
        return self.aux_k if self.aux_k is not None else max(1, min(self.d_in // 2, self.d_sae))


def _config_class(architecture: Any) -> type[SAEConfig]:
    if architecture is None:
        raise ConfigError(f"an SAE config needs 'architecture' (one of {', '.join(registry.registered_names())})")
    return registry.get_sae_class(str(architecture)).config_class


def sae_config(**fields: Any) -> SAEConfig:
    """The config of ``fields['architecture']`` built from ``fields`` (same as ``SAEConfig(**fields)``)."""
    return _config_class(fields.get("architecture"))(**fields)
