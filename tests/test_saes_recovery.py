"""Dictionary recovery on a planted sparse problem (a short plain Adam loop; the real trainer lives elsewhere)."""

from __future__ import annotations

import torch

from _train_helpers import adam_steps
from sae_lab.saes import build_sae


def planted(n=16384, d=64, atoms=256, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = torch.nn.functional.normalize(torch.randn(atoms, d, generator=g), dim=1)
    idx = torch.rand(n, atoms, generator=g).topk(k, dim=1).indices
    codes = torch.zeros(n, atoms).scatter_(1, idx, torch.rand(n, k, generator=g) + 0.5)
    return codes @ D, D


def train(sae, X, steps=1000, batch=256, lr=3e-3):
    g = torch.Generator().manual_seed(1)
    sae.init_b_dec(X[:2048], "geometric_median")
    adam_steps(sae, (X[torch.randint(0, X.shape[0], (batch,), generator=g)] for _ in range(steps)), lr)


def mean_best_cosine(D_true, W_dec):
    cos = torch.nn.functional.normalize(D_true, dim=1) @ torch.nn.functional.normalize(W_dec, dim=1).t()
    return float(cos.max(dim=1).values.mean())


def test_topk_recovers_planted_dictionary():
    X, D = planted()
    torch.manual_seed(123)  # not the planted dictionary's seed
    sae = build_sae(dict(architecture="topk", d_in=64, d_sae=512, k=4, dead_tokens=50_000, aux_k=32))
    before = mean_best_cosine(D, sae.W_dec.detach())
    train(sae, X)
    after = mean_best_cosine(D, sae.W_dec.detach())
    assert before < 0.6 and after > 0.9, (before, after)
