"""Run the model on token contexts and capture activations at one or more hook points in one pass."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from einops import rearrange

from sae_lab.activations.config import ActivationConfig
from sae_lab.activations.hooks import expand_hooks, stop_layer, validate_hooks
from sae_lab.activations.masks import outlier_threshold, special_positions
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.models import LoadedModel


@dataclass
class HookStats:
    """Per-hook statistics fixed before caching, so every shard and rank applies the same rules."""

    norm_scale: float  # multiply raw activations by this so that mean ||x|| = sqrt(d)
    median_norm: float
    outlier_threshold: float | None  # positions with ||x|| above this are excluded (None: keep all)

    def to_json(self) -> dict:
        return {
            "norm_scale": self.norm_scale,
            "median_norm": self.median_norm,
            "outlier_threshold": self.outlier_threshold,
        }


class ActivationGenerator:
    """Captures activations at ``hooks`` with a forward pass that stops after the deepest one."""

    def __init__(self, model: LoadedModel, hooks: list[str], exclude_special: bool = True):
        hooks = expand_hooks(hooks, model.hook_names)  # globs (blocks.*.hook_resid_post) -> names
        validate_hooks(hooks, model.hook_names)
        self.model, self.hooks, self.exclude_special = model, hooks, exclude_special
        self.stop_at_layer = stop_layer(self.hooks)

    @torch.inference_mode()
    def forward(self, tokens: np.ndarray) -> dict[str, torch.Tensor]:
        """Activations [b, T, d] (float32, on CPU) for each hook; per-head hooks are flattened."""
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.model.device)
        _, cache = self.model.bridge.run_with_cache(ids, names_filter=self.hooks, stop_at_layer=self.stop_at_layer)
        out = {}
        for hook in self.hooks:
            act = cache[hook]
            if act.ndim == 4:  # per-head hooks (hook_z: [b, T, heads, d_head]) -> the heads side by side
                act = rearrange(act, "b t h d -> b t (h d)")
            out[hook] = act.float().cpu()
        return out

    def special_mask(self, tokens: np.ndarray) -> np.ndarray:
        """True where a position is excluded for being BOS/EOS/pad (all False if not excluding)."""
        return special_positions(tokens, self.model.tokenizer, self.exclude_special)


def estimate_stats(acts: torch.Tensor, keep: np.ndarray, outlier_multiple: float | None) -> HookStats:
    """Normalisation scale and outlier threshold from a sample: mean ||x|| of kept, non-outlier rows -> sqrt(d)."""
    norms = acts.reshape(-1, acts.shape[-1]).norm(dim=-1)[torch.from_numpy(keep.reshape(-1))]
    if norms.numel() == 0:
        raise ValueError("no usable positions in the normalisation sample (all masked); use more data")
    median = float(norms.median())
    threshold = outlier_threshold(norms, outlier_multiple)
    if threshold is not None:
        norms = norms[norms <= threshold]
    d = acts.shape[-1]
    mean_norm = float(norms.mean())
    scale = math.sqrt(d) / mean_norm if mean_norm > 0 else 1.0
    return HookStats(norm_scale=scale, median_norm=median, outlier_threshold=threshold)


def estimate_hook_stats(
    gen: ActivationGenerator, data: DataConfig, acts_cfg: ActivationConfig
) -> dict[str, tuple[HookStats, int]]:
    """(stats, d) per hook from the first contexts of the stream: identical on every rank and rerun."""
    sample = list(itertools.islice(iter_contexts(data, gen.model.tokenizer), acts_cfg.norm_sample_contexts))
    if not sample:
        raise ValueError(
            f"data source '{data.source}' produced no complete context of "
            f"{data.context_length} tokens; use more data or a shorter context_length"
        )
    tokens = np.stack(sample)
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in gen.hooks}
    for start in range(0, len(tokens), acts_cfg.batch_size):
        for h, a in gen.forward(tokens[start : start + acts_cfg.batch_size]).items():
            parts[h].append(a)
    keep = ~gen.special_mask(tokens)
    out = {}
    for h in gen.hooks:
        acts = torch.cat(parts[h])
        stats = estimate_stats(acts, keep, acts_cfg.exclude_outliers)
        if not acts_cfg.normalize:
            stats.norm_scale = 1.0
        out[h] = (stats, int(acts.shape[-1]))
    return out
