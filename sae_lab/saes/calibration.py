"""Inference thresholds of the choice SAEs, calibrated on a sample with the final weights.

The thresholds kept during training are EMAs of per-batch values taken while the weights move, so they lag:
on the embedded model their held-out L0 undershoots k by up to 40% after one epoch. At the end of training,
the trainer passes N = n·B further tokens of the training stream through the final encoder and sets:
- Mutual Choice: one θ such that exactly k·N entries of the sample's [N, d_sae] ReLU pre-activations exceed it
  (the training rule's budget k·B per batch, over the whole sample);
- Feature Choice: per latent θ_i such that exactly q_i = n·m_i of its N values exceed it (m_i its capacity
  at batch size B, so Σ q_i = k·N).
θ is the midpoint between the q-th and (q+1)-th largest value (missing values count as 0), so the inference
rule ``pre > θ`` keeps exactly q entries of the sample. The top values are kept exactly while streaming:
a chunk can add at most q entries to the top q, so memory is O(k·N), never O(N·d_sae).
In data-parallel training each rank streams its part of the sample; ``finish`` all-gathers the ranks' top
values (O(k·N) floats per rank) and sums the counts, so every rank sets the thresholds of the whole sample.
"""

from __future__ import annotations

import torch

from sae_lab.distributed import all_sum, gather_cat, shards


class TopValues:
    """The ``q + 1`` largest values (zero-padded) of a stream of 1-D chunks of non-negative values."""

    def __init__(self, q: int, device: torch.device | str = "cpu"):
        self.q = q
        self.vals = torch.zeros(q + 1, device=device)

    def add(self, values: torch.Tensor) -> None:
        cand = values[values > self.vals[-1]]  # anything else cannot enter the top q + 1
        if cand.numel():
            self.vals = torch.cat([self.vals, cand.float()]).topk(self.q + 1, sorted=True).values

    def merge_ranks(self) -> None:
        """Data-parallel: keep the q + 1 largest values of all ranks (a no-op in one process)."""
        if shards() > 1:
            self.vals = gather_cat(self.vals).topk(self.q + 1, sorted=True).values

    def midpoint(self) -> float:
        """Between the q-th and the (q+1)-th largest value: exactly q values lie above it (barring ties)."""
        return float(self.vals[self.q - 1] + self.vals[self.q]) / 2 if self.q > 0 else float("inf")


class GlobalCalibrator:
    """Mutual Choice: one threshold for the k·N largest entries of the sample."""

    def __init__(self, sae, batch_size: int, n_batches: int):
        self.sae, self.top = sae, TopValues(sae.cfg.k * batch_size * n_batches, sae.threshold.device)
        self.tokens = self.before = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        pre = self.sae.pre_acts(x).relu_()
        self.before += int((pre > self.sae.threshold).sum())
        self.tokens += x.shape[0]
        self.top.add(pre.reshape(-1))

    @torch.no_grad()
    def finish(self) -> dict:
        """Set the threshold; returns the sample's L0 under the training-time (EMA) and calibrated thresholds
        (the calibrated one is below k where latents have fewer positive values than their quota)."""
        self.top.merge_ranks()
        self.tokens, self.before = _sum_counts(self.tokens, self.before, self.sae.threshold.device)
        theta = self.top.midpoint()
        self.sae.threshold.fill_(theta)
        after = int((self.top.vals > theta).sum())  # every sample value above θ is among the kept top q + 1
        return {
            "tokens": self.tokens,
            "l0_ema_threshold": self.before / self.tokens,
            "l0_calibrated": after / self.tokens,
        }


class PerLatentCalibrator:
    """Feature Choice: per latent i, a threshold for its q_i largest values (latents grouped by q's size, so the
    kept values take about 2·Σ q_i = 2·k·N floats)."""

    def __init__(self, sae, batch_size: int, n_batches: int):
        self.sae = sae
        self.q = sae.capacities(batch_size).to(sae.threshold.device) * n_batches
        groups = torch.ceil(torch.log2(self.q.clamp_min(1).double())).long()
        self.groups = [(groups == g).nonzero().squeeze(1) for g in torch.unique(groups).tolist()]
        self.top = [torch.zeros(len(c), int(self.q[c].max()) + 1, device=self.q.device) for c in self.groups]
        self.tokens = self.before = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor) -> None:
        by_latent = self.sae.pre_acts_by_latent(x).relu_().t()  # contiguous [d_sae, B]
        self.before += int((by_latent > self.sae.threshold.unsqueeze(1)).sum())
        self.tokens += x.shape[0]
        for i, cols in enumerate(self.groups):
            merged = torch.cat([self.top[i], by_latent.index_select(0, cols)], dim=1)
            self.top[i] = merged.topk(self.top[i].shape[1], dim=1, sorted=True).values

    @torch.no_grad()
    def finish(self) -> dict:
        if shards() > 1:  # data-parallel: each group's top values over all ranks
            self.top = [gather_cat(t, dim=1).topk(t.shape[1], dim=1, sorted=True).values for t in self.top]
        self.tokens, self.before = _sum_counts(self.tokens, self.before, self.sae.threshold.device)
        theta = torch.empty_like(self.sae.threshold)
        after = 0
        for cols, top in zip(self.groups, self.top):
            q = self.q[cols].unsqueeze(1)
            upper = top.gather(1, (q - 1).clamp_min(0)).squeeze(1)
            mid = (upper + top.gather(1, q).squeeze(1)) / 2
            theta[cols] = torch.where(q.squeeze(1) > 0, mid, torch.full_like(mid, float("inf")))
            after += int((top > theta[cols].unsqueeze(1)).sum())  # the values above θ_i are all kept
        self.sae.threshold.copy_(theta)
        return {
            "tokens": self.tokens,
            "l0_ema_threshold": self.before / self.tokens,
            "l0_calibrated": after / self.tokens,
        }


def _sum_counts(tokens: int, before: int, device: torch.device) -> tuple[int, int]:
    """(tokens, entries above the EMA threshold) of the whole sample (summed over ranks when data-parallel)."""
    if shards() == 1:
        return tokens, before
    t = all_sum(torch.tensor([tokens, before], dtype=torch.float64, device=device))
    return int(t[0]), int(t[1])
