"""Feature Choice capacities: the exact clip(λ·w, lo, cap) allocation against brute force, and the density cap."""

from __future__ import annotations

import itertools

import torch

from _train_helpers import adam_steps
from sae_lab.saes import build_sae
from sae_lab.saes.feature_choice import allocate_capacities
from sae_lab.saes.zipf import clipped_allocation


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


def test_uncapped_latent_at_capacity_b_fires_on_every_positive_token():
    """max_density = 1 is the paper's rule (capacity bounded only by B): such a latent fires on every token of the
    batch where its pre-activation is positive (dense by construction), its threshold its smallest batch value."""
    torch.manual_seed(0)
    sae = build_sae(
        dict(
            architecture="feature_choice",
            d_in=16,
            d_sae=32,
            k=8,
            capacity_rule="zipf",
            zipf_alpha=4.0,
            threshold_momentum=1.0,
            max_density=1.0,
        )
    )
    with torch.no_grad():
        sae.b_enc.fill_(-0.2)
        sae.b_enc[5] = 50.0  # latent 5: positive on every token, and the top demand rank
    x = torch.randn(64, 16)
    sae.training_forward(x)  # sets the demand ranking
    caps = sae.capacities(64)
    assert int(caps[5]) == 64
    out = sae.training_forward(x)
    pre = sae.pre_acts(x).detach()
    assert int(out.fired[5]) == 64
    assert torch.isclose(sae.threshold[5], pre[:, 5].min())  # threshold = smallest activation: dense at inference


def test_capacities_capped_at_max_density_and_still_sum_to_the_budget():
    torch.manual_seed(0)
    sae = build_sae(
        dict(
            architecture="feature_choice",
            d_in=16,
            d_sae=256,
            k=4,
            capacity_rule="zipf",
            zipf_alpha=2.0,
            threshold_momentum=1.0,
        )
    )  # default max_density = 0.1
    with torch.no_grad():
        sae.b_enc[5] = 50.0  # the top demand: uncapped it would take the whole batch
    x = torch.randn(256, 16)
    sae.training_forward(x)
    caps = sae.capacities(256)
    assert sae.capacity_cap(256) == 26  # ceil(0.1 * 256)
    assert int(caps.sum()) == 4 * 256 and int(caps.max()) == 26 and int(caps[5]) == 26
    assert int((caps == 26).sum()) > 1  # several latents bound by the cap, the excess spread over the rest
    out = sae.training_forward(x)
    assert int(out.fired.max()) <= 26
    # the cap never falls below the uniform share, so any budget fits: 64 latents, k = 16 -> share 64 of 256
    wide = build_sae(dict(architecture="feature_choice", d_in=16, d_sae=64, k=16, capacity_rule="zipf"))
    assert wide.capacity_cap(256) == 64 and int(wide.capacities(256).sum()) == 16 * 256


def sparse_toy(n: int, seed: int, d: int = 32, atoms: int = 256, p: float = 0.01):
    """Activations whose true features each fire on a fraction ``p`` of tokens (~2.6 per token)."""
    g = torch.Generator().manual_seed(seed)
    D = torch.nn.functional.normalize(torch.randn(atoms, d, generator=torch.Generator().manual_seed(7)), dim=1)
    on = torch.rand(n, atoms, generator=g) < p
    return (on * (torch.rand(n, atoms, generator=g) + 0.5)) @ D


def train_feature_choice(max_density: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Train a Zipf Feature Choice SAE on the toy and calibrate its thresholds; the density per latent on the
    calibration sample and on held-out data."""
    torch.manual_seed(0)
    sae = build_sae(
        dict(
            architecture="feature_choice",
            d_in=32,
            d_sae=512,
            k=4,
            capacity_rule="zipf",
            zipf_alpha=1.5,
            threshold_momentum=0.05,
            max_density=max_density,
        )
    )
    X = sparse_toy(65536, seed=1)
    sae.init_b_dec(X[:2048], "mean")
    adam_steps(sae, (X[(step * 512) % 61440 :][:512] for step in range(400)))
    calib = sae.threshold_calibrator(512, 8)
    for i in range(8):
        calib.add(X[61440 + 512 * i :][:512])
    calib.finish()
    with torch.no_grad():
        density = [(sae.encode(x) > 0).float().mean(0) for x in (X[61440:], sparse_toy(8192, seed=2))]
    return density[0], density[1]


def test_no_latent_is_dense_at_inference_on_a_sparse_toy():
    """True features fire 1% of the time. With the paper's uncapped Zipf capacities the top latents take the whole
    batch and stay dense at inference; with the default cap no latent exceeds max_density on held-out data."""
    (calibration, held_out), (_, uncapped) = train_feature_choice(0.1), train_feature_choice(1.0)
    assert float(uncapped.max()) > 0.9, float(uncapped.max())  # the defect this guards against exists here
    assert float(calibration.max()) <= 52 / 512  # the cap ceil(0.1 * 512) = 52 tokens a batch, exactly
    assert float(held_out.max()) <= 0.125, float(held_out.max())  # held out: within a quarter of the bound
