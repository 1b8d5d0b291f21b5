"""Compare two dictionaries: match their features one-to-one by decoder cosine (the Hungarian algorithm).

``match_dictionaries(sae_a, sae_b)`` pairs each feature of the smaller dictionary with a distinct feature of
the other so that the summed decoder cosine is maximal (``scipy.optimize.linear_sum_assignment``), e.g. a
TopK and a Feature Choice SAE on the same hook, or two seeds of one config.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae_lab.configbase import ConfigError


class DictionaryMismatchError(ConfigError):
    """Two SAEs that cannot be compared (different d_in); the message names both."""


@dataclass
class DictionaryMatch:
    """Matched pairs (a[i], b[i]) with their decoder cosine, best first."""

    a: np.ndarray  # int64 [n_pairs]
    b: np.ndarray  # int64 [n_pairs]
    cosine: np.ndarray  # float32 [n_pairs]
    d_sae_a: int
    d_sae_b: int
    same_hook: bool

    def fraction_above(self, threshold: float = 0.7) -> float:
        """Fraction of the matched features whose partner has decoder cosine above ``threshold``."""
        return float((self.cosine > threshold).mean()) if len(self.cosine) else 0.0

    def rows(self, limit: int | None = None) -> list[dict]:
        n = len(self.a) if limit is None else min(limit, len(self.a))
        return [
            {"feature_a": int(self.a[i]), "feature_b": int(self.b[i]), "cosine": float(self.cosine[i])}
            for i in range(n)
        ]


def unit_decoder(sae) -> torch.Tensor:
    """The decoder rows [d_sae, d_in] scaled to unit norm (float32, CPU)."""
    W = sae.W_dec.detach().float().cpu()
    return W / W.norm(dim=1, keepdim=True).clamp_min(1e-12)


def match_dictionaries(sae_a, sae_b, max_features: int = 20_000) -> DictionaryMatch:
    """One-to-one matching of the features of two SAEs maximising the summed decoder cosine.

    Raises DictionaryMismatchError for different ``d_in`` (the decoders live in different spaces) and ValueError
    when either dictionary exceeds ``max_features`` (the dense cost matrix and the O(n^3) solver grow fast)."""
    from scipy.optimize import linear_sum_assignment

    ca, cb = sae_a.cfg, sae_b.cfg
    if ca.d_in != cb.d_in:
        raise DictionaryMismatchError(
            f"cannot compare '{ca.name}' (d_in={ca.d_in}, hook {ca.hook_name}) with "
            f"'{cb.name}' (d_in={cb.d_in}, hook {cb.hook_name}): their decoders live in "
            f"different spaces; pick two SAEs trained on the same hook"
        )
    if max(ca.d_sae, cb.d_sae) > max_features:
        raise ValueError(
            f"dictionaries of {ca.d_sae} and {cb.d_sae} features exceed max_features={max_features} "
            f"for the exact matching; raise max_features if you have the memory and time"
        )
    cos = (unit_decoder(sae_a) @ unit_decoder(sae_b).T).numpy()
    rows, cols = linear_sum_assignment(cos, maximize=True)
    values = cos[rows, cols]
    order = np.argsort(-values, kind="stable")
    return DictionaryMatch(
        rows[order].astype(np.int64),
        cols[order].astype(np.int64),
        values[order].astype(np.float32),
        ca.d_sae,
        cb.d_sae,
        ca.hook_name == cb.hook_name,
    )
