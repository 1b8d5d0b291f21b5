"""The Zipf law of feature densities (Ayonrinde 2024), shared by Feature Choice's capacities and aux_zipf_loss.

Latents are ranked by a density (or demand) EMA, highest first; rank r (1-based) gets a weight r^(-alpha).
Both users turn the weights into an *allocation* with bounds: c_r = clip(λ·r^(-alpha), lo, hi) with λ chosen so
that Σ c_r = total exactly (``clipped_allocation``). Feature Choice allocates k·B tokens per batch with
hi = the per-latent token cap; aux_zipf's reference density allocates k (the mean L0) with hi = 1, because no
latent can fire on more than every token (``zipf_reference_density``).
"""

from __future__ import annotations

import torch

from sae_lab.configbase import ConfigError


def zipf_weights(n: int, alpha: float, device=None) -> torch.Tensor:
    """r^(-alpha) for r = 1..n, normalised to sum to 1."""
    w = torch.arange(1, n + 1, device=device, dtype=torch.float64).pow(-alpha)
    return (w / w.sum()).float()


def fit_zipf_alpha(density: torch.Tensor) -> float:
    """Least-squares Zipf exponent of the positive densities (1.0 when fewer than 3 are positive)."""
    p = density[density > 0].double().sort(descending=True).values
    if p.numel() < 3:
        return 1.0
    lr = torch.arange(1, p.numel() + 1, dtype=torch.float64, device=p.device).log()
    lp = p.log()
    slope = ((lr - lr.mean()) * (lp - lp.mean())).sum() / ((lr - lr.mean()) ** 2).sum()
    return float((-slope).clamp(0.0, 4.0))


def density_ranks(density: torch.Tensor) -> torch.Tensor:
    """0-based rank of each latent by density, highest first (ties broken by index)."""
    order = torch.argsort(density, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks


def resolve_alpha(alpha: float | str, density: torch.Tensor) -> float:
    """``alpha`` itself, or with 'fit' the least-squares exponent of ``density``."""
    return fit_zipf_alpha(density) if alpha == "fit" else float(alpha)


def zipf_reference_density(n: int, k: float, alpha: float, device=None) -> torch.Tensor:
    """q[r-1] for ranks r = 1..n: the Zipf density law with mean L0 ``k``, capped at density 1:
    q(r) = min(1, λ·r^(-alpha)) with λ such that Σ q = k (the uncapped law is q(r) = k·r^(-alpha) / Σ s^(-alpha),
    which exceeds 1 at the top ranks when k is large: 3.85 at rank 1 for 2,304 latents, k = 32)."""
    if not 0 < k <= n:
        raise ConfigError(f"a Zipf density law needs 0 < k <= n latents, got k={k}, n={n}")
    w = torch.arange(1, n + 1, device=device, dtype=torch.float64).pow(-alpha)
    return clipped_allocation(w, float(k), 0.0, 1.0).float()


def clipped_allocation(weights: torch.Tensor, total: float, lo: float, hi: float) -> torch.Tensor:
    """The real allocation c_i = clip(λ·w_i, lo, hi) with Σ c_i = total (double). Σ clip(λ·w, lo, hi) is continuous
    and non-decreasing in λ, so bisection brackets the crossing; λ is then solved exactly on the latents left
    free (strictly between the bounds) at the bracket, so the sum is exact up to rounding error."""
    w = weights.double()
    n = w.numel()
    if not n * lo <= total <= n * hi:
        raise ConfigError(f"capacities in [{lo}, {hi}] for {n} latents cannot sum to the budget {total}")
    if not bool((w > 0).all()):
        raise ConfigError("capacity weights must be positive (a Zipf weight (rank + 1)^-alpha always is)")

    def mass(lam: float) -> float:
        return float((w * lam).clamp(lo, hi).sum())

    lam_lo, lam_hi = 0.0, hi / float(w.min())  # mass(0) = n·lo <= total <= n·hi = mass(lam_hi)
    for _ in range(200):  # bisection in double precision; stops once the bracket no longer shrinks
        mid = 0.5 * (lam_lo + lam_hi)
        if not lam_lo < mid < lam_hi:
            break
        lam_lo, lam_hi = (mid, lam_hi) if mass(mid) < total else (lam_lo, mid)
    cap = (w * lam_hi).clamp(lo, hi)
    free = (w * lam_lo > lo) & (w * lam_hi < hi)  # latents whose value is λ·w on the whole bracket
    if bool(free.any()):
        lam = (total - float(cap[~free].sum())) / float(w[free].sum())
        cap[free] = (w[free] * lam).clamp(lo, hi)
    return cap
