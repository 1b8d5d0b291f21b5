"""Feature-level interventions: zero-ablate, mean-ablate, clamp, steer; at chosen features and positions.

An intervention edits an SAE's code ``z [b, T, d_sae]`` at its spliced hook point (``<hook>.hook_sae_acts``);
with the error term on, the hook's output then changes by exactly ``(z' - z) @ W_dec``. ``steer`` also works
without a splice: it adds ``strength * W_dec[f]`` to the hook's activation (the same change).

Positions: ``"all"``, an int or a list of ints, counted from the first token of the prompt (0 is BOS when the
prompt is text). In generation the same indices continue into the new tokens: the first generated token has
position ``len(prompt)``; ``"all"`` covers the prompt and every generated token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from sae_lab.circuits import checks
from sae_lab.circuits.errors import CircuitError

Positions = Literal["all"] | int | Sequence[int]
Kind = Literal["zero", "mean", "clamp", "steer"]


def position_mask(positions: list[int] | None, T: int, strict: bool, device) -> torch.Tensor:
    """bool [T]; ``strict`` raises CircuitError for a position beyond the sequence (else it is skipped)."""
    mask = torch.zeros(T, dtype=torch.bool, device=device)
    if positions is None:
        return mask.fill_(True)
    if strict and max(positions) >= T:
        raise CircuitError(
            f"position {max(positions)} is out of range for a sequence of {T} tokens (positions 0..{T - 1})"
        )
    mask[[p for p in positions if p < T]] = True
    return mask


@dataclass(eq=False)
class Intervention:
    """One edit of an SAE's code; build it with ``zero``, ``mean``, ``clamp`` or ``steer``."""

    sae: torch.nn.Module
    kind: Kind
    features: list[int]
    positions: list[int] | None  # None = all positions
    value: torch.Tensor | float = 0.0  # clamp value, steer strength, or per-feature means [len(features)] / None

    @classmethod
    def _make(cls, sae, kind: Kind, features, positions, value=0.0) -> "Intervention":
        sae = checks.sae(sae)
        return cls(sae, kind, checks.features(sae, features), checks.positions(positions), value)

    @classmethod
    def zero(cls, sae, features, positions: Positions = "all") -> "Intervention":
        """Set the features' codes to 0. ``features``: one index (int of any kind) or a list of distinct ones."""
        return cls._make(sae, "zero", features, positions)

    @classmethod
    def mean(cls, sae, features, mean=None, positions: Positions = "all") -> "Intervention":
        """Set the features' codes to their mean: from a ``FeatureDB`` (density x mean when active, i.e. the mean
        over all tokens), a tensor (``[d_sae]`` or one value per feature), or None = the mean over the positions
        of the sequence being run."""
        iv = cls._make(sae, "mean", features, positions)
        iv.value = _feature_means(mean, iv.features, iv.sae)
        return iv

    @classmethod
    def clamp(cls, sae, features, value: float, positions: Positions = "all") -> "Intervention":
        """Set the features' codes to ``value`` (a finite number)."""
        return cls._make(sae, "clamp", features, positions, checks.number(value, "value"))

    @classmethod
    def steer(cls, sae, features, strength: float, positions: Positions = "all") -> "Intervention":
        """Add ``strength`` (a finite number) to the features' codes, i.e. ``strength * W_dec[f]`` to the hook's
        activation."""
        return cls._make(sae, "steer", features, positions, checks.number(strength, "strength"))

    def edit(self, z: torch.Tensor, strict: bool = True) -> torch.Tensor:
        """The edited code ``[b, T, d_sae]`` (a new tensor; ``z`` is unchanged)."""
        mask = position_mask(self.positions, z.shape[1], strict, z.device)[None, :, None]
        idx = torch.tensor(self.features, device=z.device)
        old = z[..., idx]
        if self.kind == "zero":
            new = torch.zeros_like(old)
        elif self.kind == "clamp":
            new = torch.full_like(old, self.value)
        elif self.kind == "steer":
            new = old + self.value
        elif self.value is None:
            new = old.mean(dim=1, keepdim=True).expand_as(old)
        else:
            new = self.value.to(old).expand_as(old)
        z = z.clone()
        z[..., idx] = torch.where(mask, new, old)
        return z

    def steering_vector(self) -> torch.Tensor:
        """``strength * sum_f W_dec[f]`` [d_in]: what ``steer`` adds to the hook's activation."""
        if self.kind != "steer":
            raise CircuitError(
                f"a '{self.kind}' intervention needs the SAE spliced in (Spliced(model, [sae])); "
                f"only 'steer' works on the plain model"
            )
        return self.value * self.sae.W_dec[self.features].sum(0)

    def describe(self) -> dict:
        value = self.value.tolist() if isinstance(self.value, torch.Tensor) else self.value
        return {
            "kind": self.kind,
            "hook": self.sae.cfg.hook_name,
            "features": self.features,
            "positions": "all" if self.positions is None else self.positions,
            "value": value,
        }


def _feature_means(mean, feats: list[int], sae) -> torch.Tensor | None:
    if mean is None:
        return None
    if hasattr(mean, "feature"):  # a FeatureDB
        rows = [mean.feature(f) for f in feats]
        return torch.tensor([r["density"] * r["mean_act"] for r in rows], dtype=torch.float32)
    try:
        t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise CircuitError(f"mean must be a FeatureDB, a tensor of means or None, got {type(mean).__name__}") from None
    t = t[feats] if t.numel() == sae.cfg.d_sae else t
    if t.numel() == len(feats):
        if not bool(torch.isfinite(t).all()):
            raise CircuitError(
                f"mean holds a non-finite value for the chosen features ({t.tolist()}); give finite means"
            )
        return t
    raise CircuitError(
        f"mean has {t.numel()} values; give one per chosen feature ({len(feats)}) or a [d_sae] "
        f"vector ({sae.cfg.d_sae}), or a FeatureDB"
    )
