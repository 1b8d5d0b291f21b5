"""Streaming per-feature statistics of one SAE: bounded memory, order-independent, resumable.

State (F latents, K top examples, W = window, I intervals, S samples per interval, B histogram bins):
- ``fired``, ``sum_act``, ``max_act`` [F]: density and mean/max activation.
- Histogram [F, B] on [0, M_f) with M_f = 2^e_f the smallest power of two above the feature's max. When a
  batch raises M_f, adjacent bins are merged pairwise (bin edges nest, all arithmetic is exact), so the final
  histogram equals the one computed with the final range in one go, whatever the batch order.
- Top-K examples [F, K] (+ window token ids and the feature's activations over the window [F, K, W]): per batch
  one ``topk`` over the token axis, merged with the running tensors by a second ``topk``.
- Interval samples [F, I, S]: interval j of feature f is [j M_f/I, (j+1) M_f/I). Each (token, feature) entry gets a
  pseudo-random key from a hash of (global token index, feature); each interval keeps the S entries with the
  smallest keys (bottom-S sampling: a uniform sample without replacement that merges exactly when intervals
  merge, and is independent of batching, so a resumed run gives the same samples).
- Co-occurrence counts [F, F] (int32, dense) over pairs among each token's ``cooc_max_active`` largest codes.
Only activations > 0 count (our SAEs' codes are non-negative; negative MP coefficients are ignored).
"""

from __future__ import annotations

import math

import torch

from sae_lab.evaluation.config import AnalyzeConfig

UNSET = -1000  # exponent of a feature that has not fired yet


def hash_keys(gidx: torch.Tensor, col: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Deterministic pseudo-random keys in [0, 1) (float64) for (global token index, feature) pairs."""
    x = gidx * n_cols + col
    for mult in (0x5BD1E9955BD1E995, 0x2545F4914F6CDD1D):
        x = x ^ (x >> 29)
        x = x * mult  # wraps modulo 2^64
    return (x & ((1 << 53) - 1)).double() / float(1 << 53)


def windows(rows: torch.Tensor, cols: torch.Tensor, z: torch.Tensor, ids: torch.Tensor, T: int,
            left: int, right: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (-1 outside the context) and activations of feature ``cols`` around flat rows ``rows``."""
    offs = torch.arange(-left, right + 1, device=rows.device)
    wr = rows.unsqueeze(-1) + offs
    pos = (rows % T).unsqueeze(-1) + offs
    valid = (pos >= 0) & (pos < T)
    wr = wr.clamp(0, z.shape[0] - 1)
    tok = torch.where(valid, ids[wr], -1).int()
    act = torch.where(valid, z[wr, cols.unsqueeze(-1).expand_as(wr)], 0.0).float()
    return tok, act


class FeatureStats:
    """The streaming state of one SAE's feature statistics (see the module docstring)."""

    def __init__(self, d_sae: int, cfg: AnalyzeConfig, device: torch.device | str = "cpu"):
        F, K, W, I, S, B = d_sae, cfg.top_k, cfg.window, cfg.n_intervals, cfg.samples_per_interval, cfg.hist_bins
        self.cfg, self.F = cfg, F
        z = lambda *s, dt=torch.float32: torch.zeros(*s, dtype=dt, device=device)  # noqa: E731
        self.t = {
            "n_tokens": z(1, dt=torch.long), "fired": z(F, dt=torch.long), "sum_act": z(F, dt=torch.float64),
            "max_act": z(F), "exp": torch.full((F,), UNSET, dtype=torch.long, device=device),
            "hist": z(F, B, dt=torch.long),
            "top_val": z(F, K), "top_idx": torch.full((F, K), -1, dtype=torch.long, device=device),
            "top_ids": torch.full((F, K, W), -1, dtype=torch.int32, device=device), "top_acts": z(F, K, W),
            "s_key": torch.full((F * I, S), math.inf, dtype=torch.float64, device=device), "s_val": z(F * I, S),
            "s_idx": torch.full((F * I, S), -1, dtype=torch.long, device=device),
            "s_ids": torch.full((F * I, S, W), -1, dtype=torch.int32, device=device), "s_acts": z(F * I, S, W),
            "cooc": z(F, F, dt=torch.int32),
        }

    # ---- streaming ---------------------------------------------------------------------------------
    @torch.no_grad()
    def update(self, z: torch.Tensor, keep: torch.Tensor, tokens: torch.Tensor, first_index: int) -> None:
        """Add one batch: codes ``z`` [b*T, F], kept positions ``keep`` [b*T], ``tokens`` [b, T];
        ``first_index`` is the global index of the batch's first token (context index * T)."""
        T = tokens.shape[1]
        z = torch.where(keep.unsqueeze(1), z.float().clamp_min(0), 0.0)
        ids = tokens.reshape(-1).to(z.device)
        rows, cols = z.nonzero(as_tuple=True)
        vals = z[rows, cols]
        t = self.t
        t["n_tokens"] += int(keep.sum())
        t["fired"] += torch.bincount(cols, minlength=self.F)
        t["sum_act"].index_add_(0, cols, vals.double())
        batch_max = z.amax(0)
        t["max_act"] = torch.maximum(t["max_act"], batch_max)
        self._grow_ranges(batch_max)
        self._histogram(cols, vals)
        self._top_k(z, ids, T, first_index)
        self._samples(rows, cols, vals, z, ids, T, first_index)
        self._cooccurrence(z)

    def _grow_ranges(self, batch_max: torch.Tensor) -> None:
        """Raise M_f = 2^e_f above the batch max, merging histogram bins pairwise per doubling."""
        t, B = self.t, self.cfg.hist_bins
        need = torch.where(batch_max > 0, torch.floor(torch.log2(batch_max.double())).long() + 1, UNSET)
        # log2 may round at exact powers of two: enforce value < 2^e exactly
        need = torch.where((batch_max > 0) & (batch_max.double() >= torch.pow(2.0, need.double())), need + 1, need)
        new = torch.maximum(t["exp"], need)
        grow = (new > t["exp"]) & (t["exp"] != UNSET)
        d = (new - t["exp"])[grow]
        for step in torch.unique(d).tolist():
            f = grow.nonzero().squeeze(1)[d == step]
            g = min(2 ** int(step), B)
            merged = t["hist"][f].reshape(len(f), B // g, g).sum(-1)
            t["hist"][f] = torch.nn.functional.pad(merged, (0, B - B // g))
        t["exp"] = new

    def _bin(self, cols: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
        """floor(val / M_f * n), exact (powers of two), clamped to [0, n-1]."""
        scale = torch.pow(2.0, (int(math.log2(n)) - self.t["exp"][cols]).double())
        return torch.floor(vals.double() * scale).long().clamp_(0, n - 1)

    def _histogram(self, cols: torch.Tensor, vals: torch.Tensor) -> None:
        B = self.cfg.hist_bins
        self.t["hist"].view(-1).index_add_(0, cols * B + self._bin(cols, vals, B), torch.ones_like(cols))

    def _top_k(self, z: torch.Tensor, ids: torch.Tensor, T: int, first_index: int) -> None:
        t, K, c = self.t, self.cfg.top_k, self.cfg
        vals, rows = z.topk(min(K, z.shape[0]), dim=0)  # [K', F]
        vals, rows = vals.t(), rows.t()
        cols = torch.arange(self.F, device=z.device).unsqueeze(1).expand_as(rows)
        w_ids, w_acts = windows(rows, cols, z, ids, T, c.context_left, c.context_right)
        all_val = torch.cat([t["top_val"], vals], 1)
        best, sel = all_val.topk(K, dim=1)
        t["top_val"] = best
        t["top_idx"] = torch.cat([t["top_idx"], rows + first_index], 1).gather(1, sel)
        sel3 = sel.unsqueeze(-1).expand(-1, -1, c.window)
        t["top_ids"] = torch.cat([t["top_ids"], w_ids], 1).gather(1, sel3)
        t["top_acts"] = torch.cat([t["top_acts"], w_acts], 1).gather(1, sel3)

    def _samples(self, rows, cols, vals, z, ids, T: int, first_index: int) -> None:
        """Bottom-S hash-key sampling per (feature, interval) over the state and this batch's entries."""
        t, I, S = self.t, self.cfg.n_intervals, self.cfg.samples_per_interval
        old = torch.isfinite(t["s_key"]).view(-1).nonzero().squeeze(1)  # flat slots holding a sample
        old_f = old // (I * S)
        old_val = t["s_val"].view(-1)[old]
        gidx = rows + first_index
        group = torch.cat([old_f * I + self._bin(old_f, old_val, I), cols * I + self._bin(cols, vals, I)])
        key = torch.cat([t["s_key"].view(-1)[old], hash_keys(gidx, cols, self.F)])
        order = torch.argsort(key, stable=True)
        order = order[torch.argsort(group[order], stable=True)]
        g = group[order]
        _, counts = torch.unique_consecutive(g, return_counts=True)
        starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rank = torch.arange(len(g), device=g.device) - starts
        win = rank < S
        src, dst = order[win], g[win] * S + rank[win]
        self._write_samples(src, dst, old, rows, cols, vals, gidx, key, z, ids, T)

    def _write_samples(self, src, dst, old, rows, cols, vals, gidx, key, z, ids, T: int) -> None:
        t, c = self.t, self.cfg
        n_old = len(old)
        from_old = src < n_old
        o, b = old[src[from_old]], src[~from_old] - n_old
        new = {k: torch.full_like(t[k], fill) for k, fill in
               (("s_key", math.inf), ("s_val", 0), ("s_idx", -1), ("s_ids", -1), ("s_acts", 0))}
        flat = {k: v.view(-1, *v.shape[2:]) for k, v in new.items()}
        old_flat = {k: t[k].view(-1, *t[k].shape[2:]) for k in new}
        d_old, d_new = dst[from_old], dst[~from_old]
        for k in new:
            flat[k][d_old] = old_flat[k][o]
        w_ids, w_acts = windows(rows[b], cols[b], z, ids, T, c.context_left, c.context_right)
        flat["s_key"][d_new], flat["s_val"][d_new], flat["s_idx"][d_new] = key[src[~from_old]], vals[b], gidx[b]
        flat["s_ids"][d_new], flat["s_acts"][d_new] = w_ids, w_acts
        t.update(new)

    def _cooccurrence(self, z: torch.Tensor) -> None:
        """Count pairs (i, j), i != j, of features active on the same token (both orders)."""
        l0 = (z > 0).sum(1)
        c = min(int(l0.max()) if l0.numel() else 0, self.cfg.cooc_max_active)
        if c < 2:
            return
        vals, idx = z.topk(c, dim=1)
        live = vals > 0
        pair = live.unsqueeze(2) & live.unsqueeze(1) & ~torch.eye(c, dtype=torch.bool, device=z.device)
        keys = (idx.unsqueeze(2) * self.F + idx.unsqueeze(1))[pair]
        self.t["cooc"].view(-1).index_add_(0, keys, torch.ones_like(keys, dtype=torch.int32))

    # ---- checkpoint ---------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous().cpu() for k, v in self.t.items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in self.t.items():
            if state[k].shape != v.shape:
                raise ValueError(f"checkpoint tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
            self.t[k] = state[k].to(v.device)
