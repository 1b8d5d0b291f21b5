"""Exact co-occurrence counts of latent pairs, in memory that grows with the number of distinct co-active pairs.

A pair i < j of F latents has the key i * F + j. ``add`` appends a batch's keys (one per co-active pair of a
token, repeats allowed) to a pending buffer. Once the buffer holds ``max(flush_min, table size)`` keys (2^24 by
default: 64 MiB, ~16 batches of 2,048 tokens at k = 32) it is sorted (numpy's vectorised sort), reduced to
(distinct key, count) and merged into the running table: sorted distinct keys (uint32 up to 65,536 latents, else
int64) and their counts (int32), 8 bytes per distinct pair, against 4 F² bytes for a dense matrix (16 GiB at
65,536 latents). The merge is linear in the table (binary search, then one ``np.insert``), and the flush rule
makes its amortised cost O(1) per added key: per batch it costs about what the dense ``index_add_`` did. Counts
are exact sums, so the result does not depend on batching or flush points (a resumed analysis gives the same
table).

``top_pairs`` reads each latent's most co-active partners the way the dense matrix was read before: the
symmetric counts of a block of rows are laid out densely ([rows, F], a bounded buffer) and ranked by the same
``torch.topk`` call, so ties come out in the same order as from the full matrix.
"""

from __future__ import annotations

import numpy as np
import torch

COUNT = np.int32


class PairCounts:
    """Running counts of pairs (i < j) of ``n`` latents, stored sparsely (see the module docstring)."""

    def __init__(self, n: int, flush_min: int = 1 << 24):
        self.n, self.flush_min = n, flush_min
        self.dtype = np.uint32 if n * n <= 2**32 else np.int64  # keys < n²: 4 bytes each up to 65,536 latents
        self.keys, self.counts = np.zeros(0, self.dtype), np.zeros(0, COUNT)
        self._pending: list[np.ndarray] = []
        self._n_pending = 0

    def add_sets(self, sets: np.ndarray) -> None:
        """Count every pair among the latents of each row of ``sets`` [m, c]: ascending ids, then ``n`` in the
        unused slots."""
        c = sets.shape[1]
        first, second = np.triu_indices(c, 1)
        sets = sets.astype(self.dtype)
        a, b = np.take(sets, first, axis=1), np.take(sets, second, axis=1)  # a < b wherever b is set
        keys = (a * self.dtype(self.n) + b).reshape(-1)  # wraps where b is unused (masked next)
        if (sets[:, -1] == self.n).any():
            keys = keys[(b < self.n).reshape(-1)]
        self.add(keys)

    def add(self, keys: np.ndarray) -> None:
        """Count one occurrence of each key i * n + j (i < j) in ``keys`` (repeats count repeatedly)."""
        if len(keys):
            self._pending.append(np.asarray(keys, dtype=self.dtype))
            self._n_pending += len(keys)
        if self._n_pending >= max(self.flush_min, len(self.keys)):
            self.flush()

    def flush(self) -> None:
        """Merge the pending keys into the table."""
        if not self._pending:
            return
        p = np.concatenate(self._pending)
        self._pending, self._n_pending = [], 0
        p.sort()
        keys, counts = _distinct(p)
        del p
        if len(self.keys):
            pos = np.searchsorted(self.keys, keys)
            hit = pos < len(self.keys)
            hit[hit] = self.keys[pos[hit]] == keys[hit]
            self.counts[pos[hit]] += counts[hit]  # distinct positions: no repeated index
            new = ~hit
            keys, counts = np.insert(self.keys, pos[new], keys[new]), np.insert(self.counts, pos[new], counts[new])
        self.keys, self.counts = keys, counts

    def table(self) -> tuple[np.ndarray, np.ndarray]:
        """(sorted distinct keys, their counts), every pending key included."""
        self.flush()
        return self.keys, self.counts

    def state(self) -> dict[str, torch.Tensor]:
        keys, counts = self.table()
        return {"cooc_keys": torch.from_numpy(keys.astype(np.int64)), "cooc_counts": torch.from_numpy(counts)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        keys, counts = state["cooc_keys"].numpy(), state["cooc_counts"].numpy().astype(COUNT)
        if keys.shape != counts.shape or (len(keys) and (keys[0] < 0 or keys[-1] >= self.n * self.n)):
            raise ValueError(f"checkpoint co-occurrence table does not fit {self.n} latents")
        self.keys, self.counts, self._pending, self._n_pending = keys.astype(self.dtype), counts, [], 0

    def dense(self) -> torch.Tensor:
        """Symmetric [n, n] int32 counts (zero diagonal): for small n (tests, reference checks)."""
        keys, counts = self.table()
        out = torch.zeros(self.n * self.n, dtype=torch.int32)
        out[torch.from_numpy(keys.astype(np.int64))] = torch.from_numpy(counts)
        out = out.view(self.n, self.n)
        return out + out.t()


def _distinct(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of sorted ``p`` and how often each occurs."""
    first = np.empty(len(p), bool)
    first[0] = True
    np.not_equal(p[1:], p[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    counts = np.empty(len(starts), COUNT)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1], casting="unsafe")
    counts[-1:] = len(p) - starts[-1:]
    return p[starts], counts


def top_pairs(
    keys: np.ndarray, counts: np.ndarray, n_latents: int, n: int, block_elems: int = 1 << 25
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per latent, its ``n`` most co-active partners from a (sorted keys, counts) table: counts and ids [F, n],
    equal to ``symmetric_dense.topk(n, dim=1)`` (same call per row, so the same order among ties). Works on
    blocks of rows of at most ``block_elems`` dense entries."""
    F = n_latents
    n = min(n, F)
    a = (keys // F).astype(np.int32)
    b = (keys - a.astype(np.int64) * F).astype(np.int32)
    by_b = np.argsort(b, kind="stable")  # entries (a, b) ordered by b: the transposed half, row by row
    b_start = np.concatenate(([0], np.cumsum(np.bincount(b, minlength=F))))
    rows = max(1, min(F, block_elems // F))
    buf = torch.zeros(rows, F, dtype=torch.int32)
    out_counts, out_ids = torch.zeros(F, n, dtype=torch.int32), torch.zeros(F, n, dtype=torch.long)
    for s in range(0, F, rows):
        e = min(F, s + rows)
        block = buf[: e - s]
        block.zero_()
        lo, hi = np.searchsorted(a, [s, e])  # a is sorted (keys are)
        _scatter(block, a[lo:hi], s, b[lo:hi], counts[lo:hi])
        idx = by_b[b_start[s] : b_start[e]]
        _scatter(block, b[idx], s, a[idx], counts[idx])
        out_counts[s:e], out_ids[s:e] = block.topk(n, dim=1)
    return out_counts, out_ids


def _scatter(block: torch.Tensor, row: np.ndarray, first: int, col: np.ndarray, val: np.ndarray) -> None:
    r = torch.from_numpy(row.astype(np.int64) - first)
    block[r, torch.from_numpy(col.astype(np.int64))] = torch.from_numpy(np.ascontiguousarray(val))
