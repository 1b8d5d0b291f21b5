"""Which token positions count: the one keep mask that training (cache, stream) and evaluation both use.

A position is kept unless it holds BOS/EOS/pad (when special tokens are excluded) or, with an outlier
threshold, its activation norm exceeds ``multiple x the median norm`` of a sample's non-special positions.
"""

from __future__ import annotations

import numpy as np
import torch

from sae_lab.data.packing import special_token_mask


def special_positions(tokens: np.ndarray, tokenizer, exclude: bool = True) -> np.ndarray:
    """bool like ``tokens``: True at BOS/EOS/pad positions (all False when ``exclude`` is off)."""
    if not exclude:
        return np.zeros(tokens.shape, dtype=bool)
    return special_token_mask(tokens, tokenizer)


def outlier_threshold(norms: torch.Tensor, multiple: float | None) -> float | None:
    """``multiple`` x the median of ``norms`` (the norms of a sample's usable positions); None keeps all."""
    if multiple is None or norms.numel() == 0:
        return None
    return multiple * float(norms.median())


def keep_mask(acts: torch.Tensor, special: np.ndarray, threshold: float | None) -> torch.Tensor:
    """bool ``[b, T]`` on ``acts``' device: not special, and ``||x|| <= threshold`` when a threshold is set."""
    keep = torch.from_numpy(~special).to(acts.device)
    if threshold is not None:
        keep &= acts.norm(dim=-1) <= threshold
    return keep
