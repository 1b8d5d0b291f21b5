"""Auxiliary losses that revive latents: AuxK (Gao et al. 2024) and aux_zipf_loss (its generalisation).

AuxK. Let e = x - x_hat (detached) and D the set of dead latents (no activation in the last
``dead_tokens`` tokens). Take, per token, the top-``k_aux`` pre-activations among D, ReLU them into z_aux,
reconstruct ê = z_aux W_dec (no bias) and return

    L_auxk = aux_coef * ||ê - e||² / ||e - mean(e)||²      (sums over the batch)

i.e. the residual's reconstruction error normalised by the residual's variance, as in the paper.

aux_zipf_loss. Ayonrinde (2024) observes that feature densities roughly follow a Zipf law and proposes an
auxiliary loss for latents that fire less than that law expects. We define it as AuxK over the set U of
*underutilised* latents instead of D:

    rank r_i   = position of latent i when latents are sorted by density EMA p_i (descending, 1-based);
    q(r)       = min(1, λ r^(-alpha)),  λ such that sum_r q(r) = k = mean L0    (Zipf density, capped at 1);
    U          = { i : p_i < tolerance * q(r_i) };
    L_zipf     = aux_zipf_coef * ||ê_U - e||² / ||e - mean(e)||²  with ê_U from the top-k_aux of U.

Why: a dead latent has p_i = 0 < tolerance * q(r_i), so D ⊆ U always, and when U = D the loss is exactly
AuxK (same selection, same normalisation). Rank-relative thresholds let the loss act on a latent long before
it is dead, and the Zipf reference makes "underused" scale-free: a latent at rank r is compared with what a
Zipf dictionary would give its rank, not with a global constant. ``alpha`` is ``zipf_alpha`` or, with
'fit', the least-squares slope of log p against log rank over latents with p > 0.

The cap. The plain law q(r) = k·r^(-alpha) / Σ_s s^(-alpha) is a density above 1 at the top ranks whenever
k·r^(-alpha) > Σ_s s^(-alpha) (q(1) = 3.85 at 2,304 latents, k = 32, alpha = 1): no latent can fire on more
than every token, so the densest latents would always count as underused and be pushed to fire more. We cap
q at 1 and give the excess to the other ranks (λ solved so the law still sums to k: ``zipf.clipped_allocation``,
the same bounded allocation as Feature Choice's capacities). When q(1) <= 1 this is the plain law.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from sae_lab.distributed import sum_sq_dev
from sae_lab.saes.config import RevivalConfig
from sae_lab.saes.sparse_ops import SparseCode, gather_preacts, sparse_decode
from sae_lab.saes.zipf import density_ranks, resolve_alpha, zipf_reference_density


class RevivableSAE(Protocol):
    """What the revival losses read of an SAE. ``BaseSAE`` has all of it; this module sits below base, which
    calls it from its training step."""

    cfg: RevivalConfig
    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    density_ema: torch.Tensor
    stats_started: torch.Tensor

    def dead_mask(self) -> torch.Tensor: ...


def underutilised_mask(density: torch.Tensor, k: float, alpha: float | str, tolerance: float) -> torch.Tensor:
    """bool[d_sae]: latents whose density is below ``tolerance`` times the Zipf density of their rank (capped at 1)."""
    q = zipf_reference_density(density.numel(), k, resolve_alpha(alpha, density), density.device)
    return density < tolerance * q[density_ranks(density)].to(density.dtype)


def aux_reconstruction_loss(
    sae: RevivableSAE, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor, mask: torch.Tensor, k_aux: int
) -> torch.Tensor:
    """||ê - e||² / ||e - mean e||² with ê from the top-k_aux pre-activations among ``mask`` latents."""
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return x.new_zeros(())
    vals, j = pre[:, idx].topk(min(k_aux, idx.numel()), dim=-1, sorted=False)
    code = SparseCode.from_topk(idx[j], sae.cfg.d_sae)
    v = F.relu(gather_preacts(x, sae.b_dec, sae.W_enc.t(), sae.b_enc, code, vals.reshape(-1)))
    e = (x - x_hat).detach().float()
    e_hat = sparse_decode(v, sae.W_dec, code)
    return ((e_hat - e) ** 2).sum() / sum_sq_dev(e)  # the global batch's residual variance


def revival_losses(
    sae: RevivableSAE, x: torch.Tensor, x_hat: torch.Tensor, pre: torch.Tensor
) -> dict[str, torch.Tensor]:
    """AuxK on dead latents and (if ``cfg.aux_zipf``) aux_zipf on underutilised ones, weighted."""
    cfg, out = sae.cfg, {}
    k_aux = cfg.resolved_aux_k
    if cfg.aux_coef > 0:
        dead = sae.dead_mask()
        if bool(dead.any()):
            out["auxk"] = cfg.aux_coef * aux_reconstruction_loss(sae, x, x_hat, pre, dead, k_aux)
    if cfg.aux_zipf and cfg.aux_zipf_coef > 0 and bool(sae.stats_started):
        under = underutilised_mask(sae.density_ema, cfg.k, cfg.zipf_alpha, cfg.zipf_tolerance)
        if bool(under.any()):
            out["aux_zipf"] = cfg.aux_zipf_coef * aux_reconstruction_loss(sae, x, x_hat, pre, under, k_aux)
    return out
