"""Streaming accumulators for the faithfulness metrics (exact: sums in float64, combined at the end).

Reconstruction metrics use the kept positions only (not BOS/EOS/pad, not outliers when configured):
- ``mse``: Σ‖x − x̂‖² / (n·d), the mean over tokens and dimensions;
- ``fvu``: Σ‖x − x̂‖² / Σ‖x − μ‖², μ the per-dimension mean over the eval tokens, from
  Σ‖x − μ‖² = Σ‖x‖² − ‖Σx‖²/n (float64);
- ``l0_mean`` / ``l0_std``: active latents per token (population std); ``l1``: mean Σ_i |z_i| per token;
- ``dead_fraction``: latents never active on the eval tokens; ``dense_fraction``: active on > threshold of them;
- ``cos``: mean cos(x, x̂) per token; ``norm_ratio``: mean ‖x̂‖/‖x‖ per token.
CE metrics average over every next-token prediction of each context (positions 0..T−2), and so do the KLs.
SAELens's definitions (other positions, other ablation) are in ``saelens_defs.py``.
"""

from __future__ import annotations

import torch


class ReconStats:
    """Reconstruction and sparsity sums of one SAE."""

    def __init__(self, d_in: int, d_sae: int):
        self.n = 0
        self.sum_x = torch.zeros(d_in, dtype=torch.float64)
        self.sum_x2 = 0.0
        self.sum_err = 0.0
        self.sum_l0 = self.sum_l0_2 = self.sum_l1 = self.sum_cos = self.sum_ratio = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.long)

    @torch.no_grad()
    def update(self, x: torch.Tensor, z: torch.Tensor, x_hat: torch.Tensor) -> None:
        """Add kept rows ``x`` [N, d], their codes ``z`` [N, F] and reconstructions ``x_hat`` [N, d]."""
        x, x_hat, z = x.double(), x_hat.double(), z.double()
        active = z != 0
        l0 = active.sum(-1).double()
        xn, hn = x.norm(dim=-1), x_hat.norm(dim=-1)
        self.n += x.shape[0]
        self.sum_x += x.sum(0).cpu()
        self.sum_x2 += float((x * x).sum())
        self.sum_err += float(((x - x_hat) ** 2).sum())
        self.sum_l0 += float(l0.sum())
        self.sum_l0_2 += float((l0 * l0).sum())
        self.sum_l1 += float(z.abs().sum())
        self.sum_cos += float(((x * x_hat).sum(-1) / (xn * hn).clamp_min(1e-30)).sum())
        self.sum_ratio += float((hn / xn.clamp_min(1e-30)).sum())
        self.fired += active.sum(0).cpu()

    def result(self, dense_threshold: float) -> dict:
        n, d = max(self.n, 1), self.sum_x.numel()
        total_var = self.sum_x2 - float((self.sum_x * self.sum_x).sum()) / n
        l0 = self.sum_l0 / n
        density = self.fired.double() / n
        return {
            "mse": self.sum_err / (n * d),
            "fvu": self.sum_err / total_var if total_var > 0 else float("nan"),
            "l0_mean": l0,
            "l0_std": max(self.sum_l0_2 / n - l0 * l0, 0.0) ** 0.5,
            "l1": self.sum_l1 / n,
            "dead_fraction": float((self.fired == 0).double().mean()),
            "dense_fraction": float((density > dense_threshold).double().mean()),
            "cos": self.sum_cos / n,
            "norm_ratio": self.sum_ratio / n,
            "tokens": self.n,
        }


def next_token_ce(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Per-prediction CE [b, T-1] of ``logits`` [b, T, V] against the next tokens."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None].long()).squeeze(-1).double()


def kl_per_position(clean_logp: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ other) [b, T'] from clean log-probs [b, T', V] (float32) and the other logits [b, T, V] (T' ≤ T:
    the first T' positions)."""
    logq = torch.log_softmax(logits[:, : clean_logp.shape[1]].float(), dim=-1)
    return (clean_logp.exp() * (clean_logp - logq)).sum(-1).double()


class LossStats:
    """Sums of CE (and KL to clean) over the positions of one forward variant (each its own count)."""

    def __init__(self):
        self.n = self.n_kl = 0
        self.ce = 0.0
        self.kl = 0.0

    def update(self, ce: torch.Tensor, kl: torch.Tensor | None = None) -> None:
        """Add per-prediction CE values and, optionally, per-position KL values (any shapes; all are counted)."""
        self.n += ce.numel()
        self.ce += float(ce.sum())
        if kl is not None:
            self.n_kl += kl.numel()
            self.kl += float(kl.sum())

    @property
    def mean_ce(self) -> float:
        return self.ce / max(self.n, 1)

    @property
    def mean_kl(self) -> float:
        return self.kl / max(self.n_kl, 1)


def loss_recovered(ce_clean: float, ce_sae: float, ce_ablated: float) -> float:
    """(CE_ablated − CE_sae) / (CE_ablated − CE_clean): 1 = as good as clean, 0 = as bad as the ablation."""
    gap = ce_ablated - ce_clean
    return (ce_ablated - ce_sae) / gap if gap != 0 else float("nan")


def loss_metrics(clean: LossStats, sae: LossStats, zero: LossStats, mean: LossStats) -> dict:
    return {
        "ce_clean": clean.mean_ce,
        "ce_sae": sae.mean_ce,
        "ce_zero_ablation": zero.mean_ce,
        "ce_mean_ablation": mean.mean_ce,
        "ce_delta": sae.mean_ce - clean.mean_ce,
        "loss_recovered_zero": loss_recovered(clean.mean_ce, sae.mean_ce, zero.mean_ce),
        "loss_recovered_mean": loss_recovered(clean.mean_ce, sae.mean_ce, mean.mean_ce),
        "kl_sae": sae.mean_kl,
        "kl_zero_ablation": zero.mean_kl,
        "kl_mean_ablation": mean.mean_kl,
        "predictions": clean.n,
    }
