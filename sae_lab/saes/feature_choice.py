"""Feature Choice SAE (Ayonrinde 2024): each latent i takes at most m_i tokens of the batch (its top-m_i
ReLU pre-activations over the token axis); the capacities sum to the budget k·B.

Capacities (``capacity_rule``):
- ``uniform``: m_i = k·B / d_sae, rounded to integers that sum exactly to k·B.
- ``zipf``: m_i = clip(λ·(rank_i+1)^(-zipf_alpha), min_capacity, cap) with λ such that Σ m_i = k·B (the exact
  allocation, by bisection on λ: ``zipf.clipped_allocation``), then rounded to integers summing to k·B by largest
  remainders. rank_i ranks latents by their *demand*: an EMA of the batch-mean ReLU pre-activation (the
  activation mass a latent would take without a cap). We rank by demand, not by realised density, because under
  Feature Choice the realised density is the capacity itself, so ranking by it would freeze the initial order.
  ``zipf_alpha`` must be a number here ('fit' is refused).
Rounding: floor, then the remaining units go to the largest fractional parts (ties: higher demand first).

The cap (``max_density``, default 0.1): cap = ceil(max_density·B), raised to ceil(k·B / d_sae) when that is
larger (the uniform share, so the budget always fits). The paper's Zipf rule bounds m_i only by B; then a top
latent may take every token of the batch and fires wherever its pre-activation is positive: dense by
construction, with a threshold that calibrates to about 0 (at 2,304 latents, k = 32, alpha = 1, four latents
sat at B and took 12.5% of the budget; in a toy whose true features fire 1% of the time they ended at 0.9
inference density). With the cap no latent takes more than that fraction of any batch, so its calibrated
threshold keeps it near ``max_density`` at inference. 0.1 is the usual line between sparse and "dense" latents.

Inference: per-latent thresholds, z_i = ReLU(pre_i) · 1[pre_i > θ_i] (a JumpReLU). During training θ_i is the
EMA of each batch's m_i-th largest activation of latent i; after the last step the trainer calibrates them
with the final weights (``calibration.py``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from sae_lab.configbase import ConfigError
from sae_lab.distributed import all_sum, gather_cat, global_kth_largest, global_rows, shards, world
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.calibration import PerLatentCalibrator
from sae_lab.saes.config import RevivalConfig
from sae_lab.saes.registry import register
from sae_lab.saes.sparse_ops import SparseCode, _stable_argsort
from sae_lab.saes.zipf import clipped_allocation, density_ranks


class FeatureChoiceConfig(RevivalConfig):
    """Options of the Feature Choice SAE: k, the revival options, capacities and the threshold EMA rate."""

    architecture: Literal["feature_choice"] = "feature_choice"
    threshold_momentum: float = Field(0.01, gt=0, le=1, description="per-step EMA rate of inference thresholds")
    capacity_rule: Literal["uniform", "zipf"] = "uniform"
    min_capacity: int = Field(1, ge=0, description="least tokens a latent may take per batch")
    max_density: float = Field(
        0.1,
        gt=0,
        le=1,
        description="most of a batch a latent may take: capacities are "
        "capped at ceil(max_density * batch_size) (at least the uniform share k*B/d_sae)",
    )

    @model_validator(mode="after")
    def _check_capacity(self) -> "FeatureChoiceConfig":
        if self.capacity_rule == "zipf" and self.zipf_alpha == "fit":
            raise ValueError("capacity_rule 'zipf' needs a numeric zipf_alpha (e.g. 1.0); 'fit' is only for aux_zipf")
        return self

    def check_batch_size(self, batch_size: int) -> None:
        super().check_batch_size(batch_size)
        budget, need = self.k * batch_size, self.min_capacity * self.d_sae
        if need > budget:
            raise ConfigError(
                f"capacity_rule '{self.capacity_rule}': min_capacity={self.min_capacity} * d_sae={self.d_sae} = "
                f"{need} exceeds the budget k*batch_size = {budget}; use batch_size >= {-(-need // self.k)} "
                f"or min_capacity <= {budget // self.d_sae}"
            )


def allocate_capacities(weights: torch.Tensor, total: int, lo: int, hi: int, order_key: torch.Tensor) -> torch.Tensor:
    """Integers m_i in [lo, hi] summing to ``total``: the exact clip(λ·w_i, lo, hi) allocation
    (``clipped_allocation``) rounded by largest remainders (floor, then one more unit to the largest fractional
    parts; ties go to the lower ``order_key``). Each m_i is floor(c_i) or ceil(c_i), so the bounds hold."""
    cap = clipped_allocation(weights, total, lo, hi)
    base = cap.floor().clamp(lo, hi)
    rest = int(round(total - float(base.sum())))
    if rest > 0:
        score = (cap - base) - 1e-9 * order_key.double() / weights.numel()
        score[base >= hi] = -float("inf")
        base[score.topk(rest).indices] += 1
    return base.long()


def feature_choice_select(pre: torch.Tensor, caps: torch.Tensor) -> tuple[SparseCode, torch.Tensor, torch.Tensor]:
    """Each column i keeps its ``caps[i]`` largest positive entries. Returns the row-sorted code, the values,
    and per column the caps[i]-th largest ReLU value (0 if it has fewer positives; nan if caps[i] = 0).

    Works on latent-major rows: pass ``pre`` as the transposed view of a contiguous ``[F, B]`` matrix (see
    ``BaseSAE.pre_acts_by_latent``) to avoid a copy; a token-major ``[B, F]`` tensor is transposed once."""
    B, F = pre.shape
    by_latent = pre.t().contiguous()  # a no-op for a transposed view of a latent-major matrix
    kth = torch.full((F,), float("nan"), device=pre.device, dtype=pre.dtype)
    groups = torch.ceil(torch.log2(caps.clamp_min(1).double())).long()
    rows_l, cols_l, vals_l = [], [], []
    for g in torch.unique(groups[caps > 0]).tolist():
        cols = ((groups == g) & (caps > 0)).nonzero().squeeze(1)
        sub = by_latent if cols.numel() == F else by_latent.index_select(0, cols)
        m = caps[cols]
        v, r = sub.topk(min(int(m.max()), B), dim=1)  # [n_cols, m_max], sorted descending
        v = v.relu_()
        if shards() > 1:  # caps are over the global batch
            kth[cols], keep = _sharded_keep(v, m)
        else:
            kth[cols] = v.gather(1, (m - 1).unsqueeze(1)).squeeze(1)
            keep = (torch.arange(v.shape[1], device=pre.device) < m.unsqueeze(1)) & (v > 0)
        rows_l.append(r[keep])
        cols_l.append(cols.unsqueeze(1).expand_as(r)[keep])
        vals_l.append(v[keep])
    rows, cols, vals = torch.cat(rows_l), torch.cat(cols_l), torch.cat(vals_l)
    order = _stable_argsort(rows * F + cols)
    return SparseCode.from_rows_cols(rows[order], cols[order], B, F), vals[order], kth


def _sharded_keep(v: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """feature_choice_select's (m_i-th values, keep mask) for this rank's sorted top values ``v [n_cols, *]`` when
    the batch is split across ranks: the m_i-th largest value over all ranks, every positive value above it, and
    of the values equal to it (duplicate rows) as many as fill m_i, lower ranks (earlier rows) first."""
    kth = global_kth_largest(torch.nn.functional.pad(v, (0, int(m.max()) - v.shape[1])), m)
    above = v > kth.unsqueeze(1)
    tied = (v == kth.unsqueeze(1)) & (v > 0)
    counts = gather_cat(torch.stack([above.sum(1), tied.sum(1)]).unsqueeze(0))  # [ranks, 2, n_cols]
    room = (m - counts[:, 0].sum(0)).clamp_min(0) - counts[: world()[0], 1].sum(0)
    mine = room.clamp_min(0).minimum(counts[world()[0], 1])
    return kth, above | (tied & (tied.cumsum(1) <= mine.unsqueeze(1)))


@register("feature_choice")
class FeatureChoiceSAE(BaseSAE):
    """Training: per-latent top-m_i over the batch. Inference: per-latent thresholds (JumpReLU)."""

    config_class = FeatureChoiceConfig
    has_thresholds = True  # inference thresholds, calibrated after training (threshold_calibrator)
    activation_buffers = ("threshold", "demand_ema")
    # with a relative encoder eps of 1 its latents survive 2x the base auto lr, which gives the best held-out FVU at
    # 2,304 and 4,608 latents with <= 2% dead (BENCHMARKS.md §13, "Mutual Choice's dead floor; Feature Choice's lr")
    auto_lr_scale = 2.0
    auto_encoder_eps_ratio = 1.0

    def __init__(self, cfg: FeatureChoiceConfig):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(cfg.d_sae))
        self.register_buffer("threshold_started", torch.zeros((), dtype=torch.bool))
        self.register_buffer("demand_ema", torch.zeros(cfg.d_sae))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        return torch.relu(pre) * (pre > self.threshold)

    def capacities(self, batch_size: int) -> torch.Tensor:
        """long[d_sae]: tokens each latent may take in a batch of ``batch_size`` (sums to k * batch_size)."""
        self.cfg.check_batch_size(batch_size)
        ranks = density_ranks(self.demand_ema)
        alpha = 0.0 if self.cfg.capacity_rule == "uniform" else float(self.cfg.zipf_alpha)
        weights = (ranks + 1).double().pow(-alpha)
        budget = self.cfg.k * batch_size
        lo = min(self.cfg.min_capacity, budget // self.cfg.d_sae)
        return allocate_capacities(weights, budget, lo, self.capacity_cap(batch_size), ranks)

    def capacity_cap(self, batch_size: int) -> int:
        """The most tokens one latent may take from a batch: ceil(max_density·B), at least the uniform share."""
        cap = max(math.ceil(self.cfg.max_density * batch_size), -(-self.cfg.k * batch_size // self.cfg.d_sae))
        return min(cap, batch_size)

    def threshold_calibrator(self, batch_size: int, n_batches: int) -> PerLatentCalibrator:
        return PerLatentCalibrator(self, batch_size, n_batches)

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        with torch.no_grad():
            pre = self.pre_acts_by_latent(x).relu_()  # only positive entries can be chosen: ReLU once, in place
            caps = self.capacities(global_rows(x.shape[0]))
            code, vals, kth = feature_choice_select(pre, caps)
            self._update_running(pre, kth)
        return self.sparse_training_forward(x, pre, code, vals)

    @torch.no_grad()
    def _update_running(self, pre: torch.Tensor, kth: torch.Tensor) -> None:
        """Threshold and demand EMAs from the ReLU'd latent-major ``pre`` and the batch's m_i-th values ``kth``."""
        m = self.cfg.threshold_momentum
        by_latent = pre.t()  # pre is ReLU'd and latent-major: contiguous rows
        demand = by_latent.mean(1) if shards() == 1 else all_sum(by_latent.sum(1)) / global_rows(pre.shape[0])
        demand = demand.to(self.demand_ema.dtype)
        has = ~torch.isnan(kth)
        kth = torch.where(has, kth.to(self.threshold.dtype), self.threshold)
        if bool(self.threshold_started):
            self.threshold.lerp_(kth, m)
            self.demand_ema.lerp_(demand, m)
        else:
            self.threshold.copy_(kth)
            self.demand_ema.copy_(demand)
            self.threshold_started.fill_(True)

    # ---- SAELens mapping --------------------------------------------------------------------------
    @classmethod
    def saelens_architecture(cls, cfg: FeatureChoiceConfig) -> str | None:
        return "jumprelu"
