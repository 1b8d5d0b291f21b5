"""Streaming per-feature statistics of one SAE: bounded memory, order-independent, resumable.

State (F latents, K top examples, W = window, I intervals, S samples per interval, B histogram bins):
- ``fired``, ``sum_act``, ``max_act`` [F]: density and mean/max activation.
- Histogram [F, B] on [0, M_f) with M_f = 2^e_f the smallest power of two above the feature's max. When a
  batch raises M_f, adjacent bins are merged pairwise (bin edges nest, all arithmetic is exact), so the final
  histogram equals the one computed with the final range in one go, whatever the batch order.
- Top-K examples [F, K] (+ window token ids and the feature's activations over the window [F, K, W]): per batch
  each feature's K largest nonzero entries (a sort of the batch's nonzero entries), merged with the running
  tensors by one ``topk``.
- Interval samples [F, I, S]: interval j of feature f is [j M_f/I, (j+1) M_f/I). Each (token, feature) entry gets a
  pseudo-random key from a hash of (global token index, feature); each interval keeps the S entries with the
  smallest keys (bottom-S sampling: a uniform sample without replacement that merges exactly when intervals
  merge, and is independent of batching, so a resumed run gives the same samples).
- Co-occurrence counts over pairs (i < j) among each token's ``cooc_max_active`` largest codes: a sparse table
  of the distinct co-active pairs and their counts (``PairCounts``: 12 bytes per distinct pair, never F²).
Only activations > 0 count (our SAEs' codes are non-negative; negative MP coefficients are ignored).
"""

from __future__ import annotations

import math

import torch

from sae_lab.evaluation.config import AnalyzeConfig
from sae_lab.evaluation.pair_counts import PairCounts

UNSET = -1000  # exponent of a feature that has not fired yet
SAMPLE_FILL = {"s_key": math.inf, "s_val": 0.0, "s_idx": -1, "s_ids": -1, "s_acts": 0.0}
SAMPLE_KEYS = tuple(SAMPLE_FILL)


def hash_keys(gidx: torch.Tensor, col: torch.Tensor, n_cols: int) -> torch.Tensor:
    """Deterministic pseudo-random keys in [0, 1) (float64) for (global token index, feature) pairs."""
    x = gidx * n_cols + col
    for mult in (0x5BD1E9955BD1E995, 0x2545F4914F6CDD1D):
        x = x ^ (x >> 29)
        x = x * mult  # wraps modulo 2^64
    return (x & ((1 << 53) - 1)).double() / float(1 << 53)


def windows(
    rows: torch.Tensor, cols: torch.Tensor, z: torch.Tensor, ids: torch.Tensor, T: int, left: int, right: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids (-1 outside the context) and activations of feature ``cols`` around flat rows ``rows``."""
    offs = torch.arange(-left, right + 1, device=rows.device)
    wr = rows.unsqueeze(-1) + offs
    pos = (rows % T).unsqueeze(-1) + offs
    valid = (pos >= 0) & (pos < T)
    wr = wr.clamp(0, z.shape[0] - 1)
    tok = torch.where(valid, ids[wr], -1).int()
    act = torch.where(valid, z[wr, cols.unsqueeze(-1).expand_as(wr)], 0.0).float()
    return tok, act


def top_per_column(
    rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, n_cols: int, K: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column, the K largest of the sparse entries (rows, cols, vals): values [n_cols, K] (-1 where a column
    has fewer entries) and their rows (-1 there). Sorting the nonzero entries is far cheaper than a dense topk
    over the token axis of a sparse code."""
    order = torch.argsort(vals, descending=True, stable=True)
    order = order[torch.sort(cols[order], stable=True).indices]  # by column, largest value first within one
    col = cols[order]
    counts = torch.bincount(cols, minlength=n_cols)
    rank = torch.arange(len(col), device=col.device) - (torch.cumsum(counts, 0) - counts)[col]
    top = rank < K
    out_val = torch.full((n_cols, K), -1.0, device=vals.device, dtype=vals.dtype)
    out_row = torch.full((n_cols, K), -1, device=rows.device, dtype=rows.dtype)
    out_val[col[top], rank[top]] = vals[order[top]]
    out_row[col[top], rank[top]] = rows[order[top]]
    return out_val, out_row


class FeatureStats:
    """The streaming state of one SAE's feature statistics (see the module docstring)."""

    def __init__(self, d_sae: int, cfg: AnalyzeConfig, device: torch.device | str = "cpu"):
        F, K, W, I, S, B = d_sae, cfg.top_k, cfg.window, cfg.n_intervals, cfg.samples_per_interval, cfg.hist_bins
        self.cfg, self.F = cfg, F
        z = lambda *s, dt=torch.float32: torch.zeros(*s, dtype=dt, device=device)  # noqa: E731
        self.t = {
            "n_tokens": z(1, dt=torch.long),
            "fired": z(F, dt=torch.long),
            "sum_act": z(F, dt=torch.float64),
            "max_act": z(F),
            "exp": torch.full((F,), UNSET, dtype=torch.long, device=device),
            "hist": z(F, B, dt=torch.long),
            "top_val": z(F, K),
            "top_idx": torch.full((F, K), -1, dtype=torch.long, device=device),
            "top_ids": torch.full((F, K, W), -1, dtype=torch.int32, device=device),
            "top_acts": z(F, K, W),
            "s_key": torch.full((F * I, S), math.inf, dtype=torch.float64, device=device),
            "s_val": z(F * I, S),
            "s_idx": torch.full((F * I, S), -1, dtype=torch.long, device=device),
            "s_ids": torch.full((F * I, S, W), -1, dtype=torch.int32, device=device),
            "s_acts": z(F * I, S, W),
        }
        self.pairs = PairCounts(F)

    # ---- streaming ---------------------------------------------------------------------------------
    @torch.inference_mode()
    def update(self, z: torch.Tensor, keep: torch.Tensor, tokens: torch.Tensor, first_index: int) -> None:
        """Add one batch: codes ``z`` [b*T, F], kept positions ``keep`` [b*T], ``tokens`` [b, T];
        ``first_index`` is the global index of the batch's first token (context index * T). ``z`` is cleaned
        in place (negative codes and masked positions set to 0): pass a tensor you no longer need."""
        T = tokens.shape[1]
        z = z.float().clamp_(min=0)
        z[~keep] = 0.0
        ids = tokens.reshape(-1).to(z.device)
        rows, cols = z.nonzero(as_tuple=True)
        vals = z[rows, cols]
        t = self.t
        t["n_tokens"] += int(keep.sum())
        t["fired"] += torch.bincount(cols, minlength=self.F)
        t["sum_act"].index_add_(0, cols, vals.double())
        batch_max = torch.zeros(self.F, device=z.device).scatter_reduce_(0, cols, vals, "amax")
        t["max_act"] = torch.maximum(t["max_act"], batch_max)
        grown = self._grow_ranges(batch_max)
        self._histogram(cols, vals)
        self._top_k(rows, cols, vals, z, ids, T, first_index)
        self._samples(rows, cols, vals, z, ids, T, first_index, grown)
        self._cooccurrence(rows, cols, z)

    def _grow_ranges(self, batch_max: torch.Tensor) -> torch.Tensor:
        """Raise M_f = 2^e_f above the batch max, merging histogram bins pairwise per doubling; returns the
        features whose range grew (their interval samples must be re-bucketed)."""
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
        return grow.nonzero().squeeze(1)

    def _bin(self, cols: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
        """floor(val / M_f * n), exact (powers of two), clamped to [0, n-1]."""
        scale = torch.pow(2.0, (int(math.log2(n)) - self.t["exp"][cols]).double())
        return torch.floor(vals.double() * scale).long().clamp_(0, n - 1)

    def _histogram(self, cols: torch.Tensor, vals: torch.Tensor) -> None:
        B = self.cfg.hist_bins
        self.t["hist"].view(-1).index_add_(0, cols * B + self._bin(cols, vals, B), torch.ones_like(cols))

    def _top_k(
        self,
        rows: torch.Tensor,
        cols: torch.Tensor,
        vals: torch.Tensor,
        z: torch.Tensor,
        ids: torch.Tensor,
        T: int,
        first_index: int,
    ) -> None:
        """Merge the batch's per-feature top-K into the running top-K, in place on the features whose top-K moved;
        windows only for new winners."""
        t, K, c = self.t, self.cfg.top_k, self.cfg
        cand_val, cand_row = top_per_column(rows, cols, vals, self.F, K)  # [F, K]
        best, sel = torch.cat([t["top_val"], cand_val], 1).topk(K, dim=1)
        t["top_val"] = best
        moved = (sel != torch.arange(K, device=sel.device)).any(1).nonzero().squeeze(1)
        if not moved.numel():
            return
        sel = sel[moved]
        kept = sel.clamp(max=K - 1)
        t["top_idx"][moved] = t["top_idx"][moved].gather(1, kept)
        for name in ("top_ids", "top_acts"):
            t[name][moved] = t[name][moved].gather(1, kept[..., None].expand(-1, -1, c.window))
        mi, si = (sel >= K).nonzero(as_tuple=True)
        fi = moved[mi]
        r = cand_row[fi, sel[mi, si] - K]
        t["top_idx"][fi, si] = r + first_index
        t["top_ids"][fi, si], t["top_acts"][fi, si] = windows(r, fi, z, ids, T, c.context_left, c.context_right)

    def _samples(self, rows, cols, vals, z, ids, T: int, first_index: int, grown: torch.Tensor) -> None:
        """Bottom-S hash-key sampling per (feature, interval): re-bucket features whose range grew, then merge
        the batch entries whose key beats their interval's current S-th key (the others cannot enter)."""
        t, I, c = self.t, self.cfg.n_intervals, self.cfg
        if grown.numel():
            g = (grown.unsqueeze(1) * I + torch.arange(I, device=grown.device)).reshape(-1)
            self._merge(g, self._empty_pool())
        gidx = rows + first_index
        key = hash_keys(gidx, cols, self.F)
        group = cols * I + self._bin(cols, vals, I)
        win = key < t["s_key"].amax(1)[group]  # inf while an interval has free slots
        rows, cols, vals, gidx, key, group = rows[win], cols[win], vals[win], gidx[win], key[win], group[win]
        w_ids, w_acts = windows(rows, cols, z, ids, T, c.context_left, c.context_right)
        pool = {"s_key": key, "s_val": vals, "s_idx": gidx, "s_ids": w_ids, "s_acts": w_acts, "group": group}
        self._merge(torch.unique(group), pool)

    def _empty_pool(self) -> dict[str, torch.Tensor]:
        return {k: self.t[k][:0].reshape(0, *self.t[k].shape[2:]) for k in SAMPLE_KEYS} | {
            "group": torch.zeros(0, dtype=torch.long, device=self.t["s_key"].device)
        }

    def _merge(self, groups: torch.Tensor, pool: dict[str, torch.Tensor]) -> None:
        """Recompute the S smallest-key samples of ``groups`` (flat feature*I + interval rows) from their current
        samples (re-bucketed by value) and the new entries in ``pool``."""
        t, I, S = self.t, self.cfg.n_intervals, self.cfg.samples_per_interval
        held = {k: t[k][groups].reshape(-1, *t[k].shape[2:]) for k in SAMPLE_KEYS}
        live = torch.isfinite(held["s_key"])
        held = {k: v[live] for k, v in held.items()}
        f = (groups // I).repeat_interleave(S)[live]
        held["group"] = f * I + self._bin(f, held["s_val"], I)
        cand = {k: torch.cat([held[k], pool[k]]) for k in pool}
        order = torch.argsort(cand["s_key"], stable=True)
        order = order[torch.argsort(cand["group"][order], stable=True)]
        g = cand["group"][order]
        _, counts = torch.unique_consecutive(g, return_counts=True)
        rank = torch.arange(len(g), device=g.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        keep = rank < S
        src, dst_row, dst_slot = order[keep], g[keep], rank[keep]
        for k, fill in SAMPLE_FILL.items():
            t[k][groups] = fill
            t[k][dst_row, dst_slot] = cand[k][src].to(t[k].dtype)

    def _cooccurrence(self, rows: torch.Tensor, cols: torch.Tensor, z: torch.Tensor) -> None:
        """Count pairs i < j of features active on the same token (symmetrised when read: see cooccurrence())."""
        F, n = self.F, z.shape[0]
        l0 = torch.bincount(rows, minlength=n)
        most = int(l0.max()) if l0.numel() else 0
        c = min(most, self.cfg.cooc_max_active)
        if c < 2:
            return
        if most <= c:  # every active latent: the nonzero entries come row by row, columns ascending
            idx = torch.full((n, c), F, dtype=torch.long, device=z.device)  # F marks an empty slot
            idx[rows, torch.arange(len(rows), device=z.device) - (torch.cumsum(l0, 0) - l0)[rows]] = cols
        else:  # the c largest of each token, in ascending column order
            vals, idx = z.topk(c, dim=1)
            idx = torch.where(vals > 0, idx, F).sort(dim=1).values
        self.pairs.add_sets(idx[l0 >= 2].cpu().numpy())

    def cooccurrence(self) -> torch.Tensor:
        """Symmetric dense [F, F] counts of tokens on which both features are active (zero diagonal); for small F
        (tests): the analysis itself reads the sparse table (``state()['cooc_keys'/'cooc_counts']``)."""
        return self.pairs.dense()

    # ---- checkpoint ---------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        return {k: v.contiguous().cpu() for k, v in self.t.items()} | self.pairs.state()

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.pairs.load_state(state)
        for k, v in self.t.items():
            if state[k].shape != v.shape:
                raise ValueError(f"checkpoint tensor {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
            self.t[k] = state[k].to(v.device)
