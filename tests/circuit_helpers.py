"""Shared pieces of the circuit tests: tiny SAEs at several hooks, hook readers."""

from __future__ import annotations

import torch

from eval_helpers import sae as make_sae

RESID1, RESID2, HOOK_Z = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post", "blocks.2.attn.hook_z"


def dense_sae(hook: str, d_in: int = 64, d_sae: int = 96, seed: int = 0, name: str | None = None):
    """A 'standard' (ReLU) SAE with a random, well-scaled encoder: many features active, smooth in x."""
    s = make_sae("standard", hook, d_in, d_sae, seed=seed, name=name or f"std_{hook}")
    with torch.no_grad():
        s.b_enc.normal_(0, 0.1)
    return s
