"""Sparse codes and the autograd Functions that keep the SAE step O(nnz * d_in) outside the encoder matmul.

A code is a list of (row, col, value) entries sorted by row (CSR order). Duplicated (row, col) pairs are
allowed (matching pursuit may pick an atom twice); they add up. Both gradients that would otherwise cost a
dense ``[B, d_sae] x [B, d_in]`` matmul (grad W_enc and grad W_dec) are computed with ``embedding_bag`` over
the entries sorted by column, which sums only the nnz selected rows. The gradient of the code values,
<grad x_hat[row], W_dec[col]> per entry, is a sampled dense-dense product: PyTorch's CSR ``sampled_addmm``
kernel on CPU, gathered rows elsewhere.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_CHUNK_ENTRIES = 4096  # rows gathered at once by the fallback row_dot (one reused buffer)
_CSR_DTYPES = (torch.float32, torch.float64)  # dtypes of PyTorch's CPU CSR kernels (sampled_addmm, addmm)


def csr_kernels_serve(t: torch.Tensor) -> bool:
    """Whether PyTorch's CPU CSR kernels (``sampled_addmm``, sparse ``addmm``) take ``t``: on CPU, float32/64.
    Elsewhere (bf16, CUDA, MPS) the callers gather rows instead."""
    return t.device.type == "cpu" and t.dtype in _CSR_DTYPES


def csr_matrix(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A sparse CSR matrix for one kernel call, built without invariant checks (the callers' indices are valid
    by construction) and without PyTorch's "sparse CSR support is in beta" warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


def _stable_argsort(keys: torch.Tensor) -> torch.Tensor:
    """Stable argsort of integer keys (int64 keys take torch's radix sort: ~4x faster on CPU than float keys)."""
    return torch.sort(keys.long(), stable=True).indices


@dataclass
class SparseCode:
    """Indices of the nonzero entries of a ``[n_rows, n_cols]`` code, with both sort orders precomputed."""

    rows: torch.Tensor  # [nnz] int64, non-decreasing
    cols: torch.Tensor  # [nnz] int64
    row_offsets: torch.Tensor  # [n_rows] start of each row's entries
    n_rows: int
    n_cols: int
    per_row: int | None = None  # entries per row when uniform (TopK, MP): enables a cheaper grad of the values
    _by_col: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def from_rows_cols(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int) -> "SparseCode":
        """From entries already sorted by row."""
        counts = torch.bincount(rows, minlength=n_rows)
        offsets = torch.cumsum(counts, 0) - counts
        return SparseCode(rows, cols, offsets, n_rows, n_cols)

    @staticmethod
    def from_topk(indices: torch.Tensor, n_cols: int) -> "SparseCode":
        """From ``[n_rows, k]`` column indices (k entries per row)."""
        n, k = indices.shape
        dev = indices.device
        rows = torch.arange(n, device=dev).repeat_interleave(k)
        offsets = torch.arange(0, n * k, k, device=dev)
        return SparseCode(rows, indices.reshape(-1), offsets, n, n_cols, per_row=k)

    @property
    def nnz(self) -> int:
        return self.cols.numel()

    def by_col(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(permutation sorting the entries by column, per-column offsets into that order)."""
        if self._by_col is None:
            perm = _stable_argsort(self.cols)
            counts = torch.bincount(self.cols, minlength=self.n_cols)
            self._by_col = (perm, torch.cumsum(counts, 0) - counts)
        return self._by_col

    def col_sum(self, rows_data: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``[n_cols, d]``: for every column, sum over its entries of weight * rows_data[row]."""
        perm, offs = self.by_col()
        return F.embedding_bag(self.rows[perm], rows_data, offs, mode="sum", per_sample_weights=weights[perm])

    def row_sum(self, table: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``[n_rows, d]``: for every row, sum over its entries of weight * table[col]."""
        return F.embedding_bag(self.cols, table, self.row_offsets, mode="sum", per_sample_weights=weights)

    def row_dot(self, row_data: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """``[nnz]``: <row_data[row], table[col]> for every entry (a sampled dense-dense product)."""
        if csr_kernels_serve(row_data) and table.dtype == row_data.dtype:
            return self._row_dot_sddmm(row_data, table)
        return self._row_dot_gather(row_data, table)

    def _row_dot_sddmm(self, row_data: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """PyTorch's CSR ``sampled_addmm`` kernel: 3-8x faster on CPU than gathering rows (no [nnz, d] copies)."""
        crow = torch.cat([self.row_offsets, self.row_offsets.new_tensor([self.nnz])])
        values = row_data.new_zeros(self.nnz)  # zeros, not empty: beta=0 still reads them (0 * nan = nan)
        pattern = csr_matrix(crow, self.cols, values, (self.n_rows, self.n_cols))
        return torch.sparse.sampled_addmm(pattern, row_data, table.t(), beta=0.0).values()

    def _row_dot_gather(self, row_data: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Fallback for devices/dtypes without a sampled_addmm kernel: gathered rows, chunked."""
        out = row_data.new_empty(self.nnz)
        step = _CHUNK_ENTRIES if self.per_row is None else max(1, _CHUNK_ENTRIES // self.per_row) * self.per_row
        buf = table.new_empty(min(step, self.nnz), table.shape[1])  # reused: no fresh pages per chunk
        for s in range(0, self.nnz, step):
            e = min(s + step, self.nnz)
            g = torch.index_select(table, 0, self.cols[s:e], out=buf[: e - s])
            if self.per_row is not None:  # rows s/k .. e/k, k entries each: one batched matvec
                k = self.per_row
                rd = row_data[s // k : e // k].unsqueeze(-1)
                torch.bmm(g.view(-1, k, g.shape[1]), rd, out=out[s:e].view(-1, k, 1))
            else:
                torch.linalg.vecdot(g, row_data.index_select(0, self.rows[s:e]), out=out[s:e])
        return out

    def to_dense(self, values: torch.Tensor) -> torch.Tensor:
        """The dense ``[n_rows, n_cols]`` code (duplicates summed)."""
        out = values.new_zeros(self.n_rows, self.n_cols)
        return out.index_put_((self.rows, self.cols), values, accumulate=True)


class _GatherPreacts(torch.autograd.Function):
    """values = ((x - b_dec) @ W_enc + b_enc)[rows, cols], given precomputed values; sparse backward."""

    @staticmethod
    def forward(ctx, x, b_dec, W_encT, b_enc, code: SparseCode, values):
        ctx.save_for_backward(x, b_dec, W_encT)
        ctx.code = code
        return values.clone()

    @staticmethod
    def backward(ctx, g):
        x, b_dec, W_encT = ctx.saved_tensors
        code: SparseCode = ctx.code
        g = g.to(W_encT.dtype)
        need = ctx.needs_input_grad
        grad_benc = torch.zeros(code.n_cols, dtype=g.dtype, device=g.device).index_add_(0, code.cols, g)
        grad_W = code.col_sum((x - b_dec).to(g.dtype), g) if need[2] else None
        grad_x = code.row_sum(W_encT, g) if need[0] else None
        grad_bdec = -(grad_benc @ W_encT) if need[1] else None
        return grad_x, grad_bdec, grad_W, grad_benc if need[3] else None, None, None


class _SparseDecode(torch.autograd.Function):
    """x_hat = code(values) @ W_dec, without materialising the dense code; sparse backward."""

    @staticmethod
    def forward(ctx, values, W_dec, code: SparseCode):
        values = values.to(W_dec.dtype)
        ctx.save_for_backward(values, W_dec)
        ctx.code = code
        return code.row_sum(W_dec, values)

    @staticmethod
    def backward(ctx, g):
        values, W_dec = ctx.saved_tensors
        code: SparseCode = ctx.code
        g = g.to(W_dec.dtype).contiguous()
        grad_v = code.row_dot(g, W_dec) if ctx.needs_input_grad[0] else None
        grad_W = code.col_sum(g, values) if ctx.needs_input_grad[1] else None
        return grad_v, grad_W, None


def gather_preacts(x, b_dec, W_encT, b_enc, code: SparseCode, values: torch.Tensor) -> torch.Tensor:
    """Differentiable pre-activations at the code's entries (``values`` = their no-grad values)."""
    return _GatherPreacts.apply(x, b_dec, W_encT, b_enc, code, values)


def sparse_decode(values: torch.Tensor, W_dec: torch.Tensor, code: SparseCode) -> torch.Tensor:
    """``[n_rows, d_in]`` = sum over entries of value * W_dec[col] (no decoder bias)."""
    return _SparseDecode.apply(values, W_dec, code)
