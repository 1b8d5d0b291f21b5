"""Metrics records and the one-line progress summary of a sweep."""

from __future__ import annotations

import torch

from sae_lab.saes.base import BaseSAE
from sae_lab.training.config import TrainConfig
from sae_lab.training.state import Member, Position
from sae_lab.training.step import WindowStats


def make_record(m: Member, pos: Position, cfg: TrainConfig, tokens_per_s: float) -> dict:
    """One metrics.jsonl line for ``m``; resets its window."""
    means = m.window.means()
    aux = {k: v for k, v in means.items() if k not in ("loss", "mse", "fvu", "l0", "grad_norm")}
    record = {
        "sae": m.name,
        "step": pos.step,
        "tokens": pos.tokens,
        "lr": m.window.lr,
        "loss": means.get("loss"),
        "mse": means.get("mse"),
        "fvu": means.get("fvu"),
        "l0": means.get("l0"),
        "grad_norm": means.get("grad_norm"),
        "dead_frac": float(m.sae.dead_mask().float().mean()),
        "rare_frac": m.window.rare_frac(cfg.rare_density),
        "underused_frac": float(underused_mask(m.sae).float().mean()),
        **aux,
        "tokens_per_s": tokens_per_s,
    }
    m.window = WindowStats()
    m.last_record = record
    return record


def underused_mask(sae: BaseSAE) -> torch.Tensor:
    """bool[d_sae]: latents firing below their Zipf-expected density (the SAE's aux_zipf definition, from its
    density EMA; see sae_lab.saes.aux; SAEs without aux_zipf options, e.g. MP, are judged by the default Zipf
    law of RevivalConfig). All False for SAEs without a density EMA or a k."""
    from sae_lab.saes.aux import underutilised_mask
    from sae_lab.saes.config import RevivalConfig

    density, c = getattr(sae, "density_ema", None), sae.cfg
    if density is None or getattr(c, "k", None) is None:
        return torch.zeros(c.d_sae, dtype=torch.bool)
    defaults = RevivalConfig.model_fields
    alpha = getattr(c, "zipf_alpha", defaults["zipf_alpha"].default)
    tolerance = getattr(c, "zipf_tolerance", defaults["zipf_tolerance"].default)
    return underutilised_mask(density, c.k, alpha, tolerance)


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}..{format(hi, fmt)}"


def postfix(records: list[dict]) -> str:
    """One line for the whole sweep: ranges over SAEs when they differ."""
    return " ".join(
        [
            f"loss={_span([r['loss'] for r in records], '.4g')}",
            f"fvu={_span([r['fvu'] for r in records], '.3f')}",
            f"L0={_span([r['l0'] for r in records], '.1f')}",
            f"dead={_span([100 * r['dead_frac'] for r in records], '.1f')}%",
        ]
    )
