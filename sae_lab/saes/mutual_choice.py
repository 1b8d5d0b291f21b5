"""Mutual Choice SAE (Ayonrinde 2024): keep the top k·B entries of the whole [B, d_sae] ReLU pre-activation
matrix (the BatchTopK allocation). Inference is batch-independent: a single global threshold θ gives
z = ReLU(pre) · 1[pre > θ] (a JumpReLU). During training θ is the EMA of each batch's k·B-th largest activation;
after the last step the trainer calibrates it with the final weights (``calibration.py``), because the EMA lags.
Beyond the paper, a dead latent also trains on its ``dead_floor`` best tokens of each batch (``saes/README.md``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from sae_lab.distributed import all_sum, global_kth_largest, global_rows, shards
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.calibration import GlobalCalibrator
from sae_lab.saes.config import RevivalConfig
from sae_lab.saes.registry import register
from sae_lab.saes.sparse_ops import SparseCode


class MutualChoiceConfig(RevivalConfig):
    """Options of the Mutual Choice SAE: k, the revival options and the threshold EMA rate."""

    architecture: Literal["mutual_choice"] = "mutual_choice"
    threshold_momentum: float = Field(0.01, gt=0, le=1, description="per-step EMA rate of the inference threshold")
    dead_floor: int = Field(
        8,
        ge=0,
        description="training only: each dead latent also takes its dead_floor best tokens of the batch "
        "(those with a positive pre-activation) beside the k·B won ones, so the reconstruction loss trains it; 0: off",
    )


def batch_topk_select(pre: torch.Tensor, n_keep: int, hint: float = 0.0) -> tuple[SparseCode, torch.Tensor, float]:
    """The n_keep largest positive entries of ``pre [B, F]`` as a row-sorted code, their values and the
    batch threshold (the smallest kept value; 0 when fewer than n_keep entries are positive).

    ``hint`` (e.g. the running threshold) only speeds things up: entries above a fraction of it are searched
    first, and the full matrix is searched when they are too few. The result does not depend on it.
    """
    B, F = pre.shape
    flat = pre.reshape(-1)
    cand, vals, t = (_sharded_threshold if shards() > 1 else _local_threshold)(flat, n_keep, hint)
    t = max(t, 0.0)
    keep = (vals >= t) & (vals > 0)
    sel = keep.nonzero().squeeze(1) if cand is None else cand[keep]  # ascending = row-major order
    code = SparseCode.from_rows_cols(sel // F, sel % F, B, F)
    return code, flat[sel], t


def _local_threshold(flat: torch.Tensor, n_keep: int, hint: float):
    """(candidate indices or None for all, their values, the n_keep-th largest value) of ``flat``."""
    n_keep = min(n_keep, flat.numel())
    cand = None
    for frac in (0.8, 0.5):
        if hint > 0:
            idx = (flat > hint * frac).nonzero().squeeze(1)
            if idx.numel() >= n_keep:
                cand = idx
                break
    vals = flat if cand is None else flat[cand]
    return cand, vals, float(vals.topk(n_keep, sorted=False).values.min()) if n_keep > 0 else float("inf")


def _sharded_threshold(flat: torch.Tensor, n_keep: int, hint: float):
    """_local_threshold when the batch is split across ranks (``flat`` is this rank's part): the n_keep-th
    largest entry of the global batch, from every rank's local top n_keep (all-gathered). Candidates above a
    fraction of ``hint`` are used when the ranks together hold at least n_keep of them."""
    n_keep = min(n_keep, flat.numel() * shards())
    cand = None
    for frac in (0.8, 0.5):
        if hint > 0:
            idx = (flat > hint * frac).nonzero().squeeze(1)
            if int(all_sum(torch.tensor([idx.numel()], device=flat.device))) >= n_keep:
                cand = idx
                break
    vals = flat if cand is None else flat[cand]
    top = vals.topk(min(n_keep, vals.numel()), sorted=False).values
    top = torch.nn.functional.pad(top, (0, n_keep - top.numel()))  # zeros: t is clamped at 0 anyway
    return cand, vals, float(global_kth_largest(top, n_keep)) if n_keep > 0 else float("inf")


@register("mutual_choice")
class MutualChoiceSAE(BaseSAE):
    """Training: BatchTopK over the batch x latent matrix. Inference: global threshold (JumpReLU)."""

    config_class = MutualChoiceConfig
    has_thresholds = True  # inference thresholds, calibrated after training (threshold_calibrator)
    activation_buffers = ("threshold",)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_started", torch.zeros((), dtype=torch.bool))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_acts(x)
        return torch.relu(pre) * (pre > self.threshold)

    def threshold_calibrator(self, batch_size: int, n_batches: int) -> GlobalCalibrator:
        return GlobalCalibrator(self, batch_size, n_batches)

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        with torch.no_grad():
            pre = self.pre_acts(x)
            hint = float(self.threshold) if bool(self.threshold_started) else 0.0
            code, vals, t = batch_topk_select(pre, self.cfg.k * global_rows(x.shape[0]), hint)
            self._update_threshold(t)
            counted = None
            if self.cfg.dead_floor > 0:
                code, vals, counted = self._with_dead_floor(pre, code, vals)
        return self.sparse_training_forward(x, pre, code, vals, counted)

    def _with_dead_floor(self, pre: torch.Tensor, code: SparseCode, vals: torch.Tensor):
        """``code`` plus each dead latent's ``dead_floor`` best tokens of the (global) batch where its
        pre-activation is positive; (code, values, bool mask of the entries won in the k·B competition)."""
        dead = self.dead_mask().nonzero().squeeze(1)
        if dead.numel() == 0:
            return code, vals, None
        B, F = pre.shape
        won = code.rows * F + code.cols
        m = min(self.cfg.dead_floor, global_rows(B))
        v, rows = pre[:, dead].topk(min(m, B), dim=0)  # [<= m, n_dead]
        keep = v > 0
        if shards() > 1:  # the m best tokens of the global batch: this rank keeps those it holds
            top = torch.nn.functional.pad(v.t(), (0, m - v.shape[0]))
            keep &= v >= global_kth_largest(top, m)
        floor = (rows * F + dead)[keep]
        flat, inverse = torch.unique(torch.cat([won, floor]), return_inverse=True)  # sorted = row-major
        counted = torch.zeros(flat.numel(), dtype=torch.bool, device=pre.device)
        counted[inverse[: won.numel()]] = True
        return SparseCode.from_rows_cols(flat // F, flat % F, B, F), pre.reshape(-1)[flat], counted

    @torch.no_grad()
    def _update_threshold(self, t: float) -> None:
        if bool(self.threshold_started):
            self.threshold.lerp_(torch.tensor(t, device=self.threshold.device), self.cfg.threshold_momentum)
        else:
            self.threshold.fill_(t)
            self.threshold_started.fill_(True)

    @classmethod
    def saelens_architecture(cls, cfg: MutualChoiceConfig) -> str | None:
        return "jumprelu"  # its global threshold, saved as a per-latent vector
