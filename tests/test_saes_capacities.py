"""Feature Choice capacities: the exact clip(λ·w, lo, B) allocation against brute force, and latents at B."""

from __future__ import annotations

import itertools

import torch

from sae_lab.saes import build_sae
from sae_lab.saes.feature_choice import allocate_capacities, clipped_allocation


def brute_clipped(w: torch.Tensor, total: float, lo: float, hi: float) -> torch.Tensor:
    """Reference: Σ clip(λ·w, lo, hi) is piecewise linear in λ with kinks at lo/w_i and hi/w_i; find the
    segment between consecutive kinks that contains ``total`` and interpolate linearly (no iteration)."""
    w = w.double()
    kinks = sorted({0.0, *(lo / w).tolist(), *(hi / w).tolist()})

    def mass(lam):
        return float((w * lam).clamp(lo, hi).sum())

    for a, b in zip(kinks, kinks[1:]):
        ma, mb = mass(a), mass(b)
        if ma <= total <= mb:
            lam = a if mb == ma else a + (b - a) * (total - ma) / (mb - ma)
            return (w * lam).clamp(lo, hi)
    raise AssertionError("total outside [n·lo, n·hi]")


def brute_integer(c: torch.Tensor, total: int, lo: int, hi: int) -> torch.Tensor:
    """Reference rounding: of all integer vectors in [lo, hi]^n summing to ``total``, the closest to c (L2)."""
    best, best_d = None, float("inf")
    for m in itertools.product(range(lo, hi + 1), repeat=c.numel()):
        if sum(m) == total:
            d = float(((torch.tensor(m, dtype=torch.double) - c) ** 2).sum())
            if d < best_d:
                best, best_d = m, d
    return torch.tensor(best)


def test_exact_allocation_matches_brute_force_on_random_weights_and_bounds():
    g = torch.Generator().manual_seed(0)
    for trial in range(40):
        n = int(torch.randint(3, 6, (1,), generator=g))
        lo = int(torch.randint(0, 3, (1,), generator=g))
        hi = lo + int(torch.randint(1, 6, (1,), generator=g))
        total = int(torch.randint(n * lo, n * hi + 1, (1,), generator=g))
        w = torch.rand(n, generator=g).double() ** 3 + 1e-3  # skewed, so both bounds bind in many trials
        c = clipped_allocation(w, total, lo, hi)
        assert torch.allclose(c, brute_clipped(w, total, lo, hi), atol=1e-9), trial
        m = allocate_capacities(w, total, lo, hi, torch.argsort(torch.argsort(-w)))
        assert int(m.sum()) == total and torch.equal(m, brute_integer(c, total, lo, hi)), trial


def test_exact_allocation_when_both_bounds_bind_at_scale():
    """The issue's setting (4,608 latents, B = 1,024, k = 32, lo = 1): the exact continuous allocation, both
    bounds binding, against the kink-segment reference; every integer is floor or ceil of it."""
    for alpha in (1.0, 1.5):
        w = torch.arange(1, 4609).double().pow(-alpha)
        total = 32 * 1024
        c, ref = clipped_allocation(w, total, 1, 1024), brute_clipped(w, total, 1, 1024)
        assert torch.allclose(c, ref, rtol=1e-9, atol=1e-9)
        assert (c == 1024).any() and (c == 1).any()  # both bounds bind
        m = allocate_capacities(w, total, 1, 1024, torch.arange(4608))
        assert int(m.sum()) == total and ((m == c.floor()) | (m == c.ceil())).all()


def test_latent_at_capacity_b_fires_on_every_positive_token():
    """Capacity B means no cap: such a latent fires on every token of the batch where its pre-activation is
    positive (dense by construction), and its inference threshold is its smallest positive batch value."""
    torch.manual_seed(0)
    sae = build_sae(dict(architecture="feature_choice", d_in=16, d_sae=32, k=8, capacity_rule="zipf",
                         zipf_alpha=4.0, threshold_momentum=1.0))
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)
        sae.b_enc[5] = 50.0  # latent 5: positive on every token, and the top demand rank
    x = torch.randn(64, 16)
    sae.training_forward(x)  # sets the demand ranking
    caps = sae.capacities(64)
    assert int(caps[5]) == 64 and int((caps == 64).sum()) >= 1
    out = sae.training_forward(x)
    pre = sae.pre_acts(x).detach()
    at_b = (caps == 64).nonzero().squeeze(1)
    assert torch.equal(out.fired[at_b], (pre[:, at_b] > 0).sum(0))  # every positive token, no cap
    assert int(out.fired[5]) == 64
    assert torch.isclose(sae.threshold[5], pre[:, 5].min())  # threshold = smallest activation: dense at inference
    assert float((sae.encode(x)[:, 5] > 0).float().mean()) >= 63 / 64
