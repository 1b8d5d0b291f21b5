"""Matching-pursuit SAE (Costa, Fel, Lubana, Tolooshams, Ba 2025).

Encoder = k greedy steps on the residual, starting from r = x - b_dec:
    j = argmax_j <r, d_j>   (mp_nonneg: the largest positive one, coefficient a = max(<r,d_j>, 0);
                             otherwise classic MP: j = argmax |<r,d_j>|, a = <r,d_j>)
    z_j += a ;  r -= a d_j
and x_hat = z W_dec + b_dec. Trained atoms are unit norm, so ||r||² drops by a² each step (never grows). Atoms
loaded from SAELens keep their norms; the step is then SAELens's (a = <r,d_j>, not the projection
<r,d_j>/||d_j||²), and ||r||² changes by -a²(2 - ||d_j||²), which the residual-norm bookkeeping uses.

Correlations c = r W_decᵀ are computed once; each step then either recomputes them (``mp_update='full'``,
O(B·d·F) per step) or updates them through rows of the Gram matrix G = W_dec W_decᵀ (``'gram'``:
c -= a G[j], O(B·F) per step; on CPU one sparse x dense ``addmm`` that gathers, scales and subtracts in a single
pass). When most atoms are selected, G is computed whole, as its upper triangle mirrored (symmetric_gram), into a
workspace kept between training steps, and the backward reads the selected atoms' Grams from it; else its rows are
computed lazily, only for atoms some token selects. Tokens are pursued in chunks of ~CHUNK_ELEMENTS correlations
(chunk_tokens); the row argmax is a two-level blocked reduction.

Backward: a custom autograd Function keeps only the selected indices J [B,k] and coefficients A [B,k] and
back-propagates analytically through the unrolled chain (selection is piecewise constant). With
r_{s-1} = r_0 - Σ_{t<s} a_t d_t and g_s = dL/dr_s = Σ_{t>s} ga_t d_t,
    ga_s = dL/d<r_{s-1}, d_s> = (dL/da_s - <g_s, d_s>) · 1[a_s != 0]   (zero: clamped when mp_nonneg, or stopped)
    dL/dd_s = ga_s · r_{s-1} - a_s · g_s = ga_s r_0 - Σ_{t≠s} C_st d_t,  C_st = ga_s a_t (t<s), a_s ga_t (t>s)
    dL/dr_0 = Σ_t ga_t d_t .
The scalar recursion for ga uses the per-token k x k Gram of the selected atoms; the atom gradients are one
batched [k,k]@[k,d] product plus a sparse column sum of ga_s r_0, so no residuals are materialised and no
[B, F] correlation matrix is stored for the backward.

``encode`` is differentiable too (when autograd is on and its input or the atoms require grad): given the chosen
atoms, the coefficients are linear in x - b_dec, and the same backward gives their gradient (selection held
fixed, as for TopK's). The circuit API's gradients (attribution patching, edges) flow through MP SAEs by it.

Inference: ``mp_stop='fixed'`` runs k steps; 'relative'/'absolute' stop a token after the first step that leaves
||r|| < mp_threshold (· ||x - b_dec|| if relative), or after mp_k_max steps (SAELens's rule: the first step is
always taken, the comparison is strict). ``mp_stop_on_repeat`` also stops a token after a step
that leaves its support unchanged (SAELens's stop_on_duplicate_support; the cap is then mp_k_max or k).

There is no separate encoder: the first correlations are (x - b_dec) W_decᵀ, so ``W_enc`` is exposed as the
read-only view W_decᵀ and ``b_enc`` as zeros (not parameters, not saved).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from sae_lab.distributed import sum_sq_dev
from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.config import SparseConfig
from sae_lab.saes.registry import register
from sae_lab.saes.sparse_ops import (
    SparseCode,
    _stable_argsort,
    csr_kernels_serve,
    csr_matrix,
    sparse_decode,
)

GRAM_BLOCKS = 6  # row blocks of the Gram's upper triangle: ~0.7x the time of one full matmul at 2k-5k atoms


def symmetric_gram(W: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """G = W Wᵀ into ``out`` [F, F]: the upper triangle as GRAM_BLOCKS row strips (each one matmul written in
    place), each strip mirrored below the diagonal. Its values are those of ``W @ W.t()`` up to rounding, and it is
    exactly symmetric."""
    F = W.shape[0]
    step = -(-F // GRAM_BLOCKS)
    for i in range(0, F, step):
        e = min(i + step, F)
        torch.mm(W[i:e], W[i:].t(), out=out[i:e, i:])
        if e < F:
            out[e:, i:e].copy_(out[i:e, e:].t())
    return out


def full_gram(n_tokens: int, n_steps: int, n_atoms: int) -> bool:
    """Whether a pursuit computes the whole Gram matrix (most atoms will be selected) rather than rows on use."""
    return n_tokens * n_steps >= n_atoms


class _GramRows:
    """Rows of G = W Wᵀ: all at once when most atoms will be selected (one large matmul is ~2.5x faster
    than many row blocks), else computed on first use (only for atoms some token selects) and cached."""

    def __init__(self, W: torch.Tensor, full: bool = False, workspace: torch.Tensor | None = None):
        F = W.shape[0]
        self.W, self.full = W, full
        self.G = workspace if workspace is not None else W.new_empty(F, F)
        if full:
            symmetric_gram(W, self.G)
            return
        self.n = 0
        self.slot = torch.full((F,), -1, dtype=torch.long, device=W.device)

    def _slots(self, j: torch.Tensor) -> torch.Tensor:
        """Rows of self.G holding G[j] (computing the missing ones in place)."""
        if self.full:
            return j
        missing = j[self.slot[j] < 0]
        if missing.numel():
            new = torch.unique(missing)
            n0, n1 = self.n, self.n + new.numel()
            torch.mm(self.W[new], self.W.t(), out=self.G[n0:n1])  # written in place: no copy
            self.slot[new] = torch.arange(n0, n1, device=j.device)
            self.n = n1
        return self.slot[j]

    def subtract(self, c: torch.Tensor, j: torch.Tensor, a: torch.Tensor) -> None:
        """c[b] -= a[b] * G[j[b]] for every row b of the correlations ``c``, in place."""
        slots = self._slots(j)
        if csr_kernels_serve(c):
            # a one-entry-per-row CSR matrix times G: gathers, scales and subtracts in one pass (~2x faster)
            crow = torch.arange(len(j) + 1, device=c.device)
            c.addmm_(csr_matrix(crow, slots, a, (len(j), self.G.shape[0])), self.G, alpha=-1)
        else:
            c.addcmul_(self.G.index_select(0, slots), a.unsqueeze(1), value=-1)


CHUNK_ELEMENTS = 512 * 4608  # tokens x atoms pursued together (BENCHMARKS.md §11: fastest at 2,304-9,216 atoms)
MIN_CHUNK = 64


def chunk_tokens(n_atoms: int) -> int:
    """Tokens pursued together: about CHUNK_ELEMENTS correlations ([chunk, F], 9 MB in fp32). Fewer, larger
    chunks cut the per-step operator overhead (k steps of a few ops per chunk). The chunking changes the results
    only by fp32 rounding."""
    return max(MIN_CHUNK, CHUNK_ELEMENTS // n_atoms)


BLOCK = 128  # columns per block of the two-level row argmax


def row_max(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, first index of the max) of each row of ``c``, like ``c.max(-1)``. When the width is a multiple
    of BLOCK, a blocked reduction (amax per block, then the winning block) is ~2x faster on CPU."""
    n, F = c.shape
    if F % BLOCK or F < 2 * BLOCK:
        return c.max(-1)
    blocks = c.view(n, F // BLOCK, BLOCK)
    best_block = blocks.amax(-1).max(-1).indices
    value, within = blocks[torch.arange(n, device=c.device), best_block].max(-1)
    return value, best_block * BLOCK + within


@torch.no_grad()
def pursuit(
    r0: torch.Tensor,
    W: torch.Tensor,
    n_steps: int,
    nonneg: bool = True,
    update: str = "gram",
    stop_norm: torch.Tensor | None = None,
    stop_on_repeat: bool = False,
    workspace: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy steps from residual ``r0 [B, d]`` over atoms ``W [F, d]`` (any norms; a = <r, d_j>), in W's dtype
    (autocast is off: greedy selection needs full precision). ``workspace`` ([F, F], optional) receives the Gram
    matrix.

    Returns (J long[B, n], A [B, n], final ||r||² [B]). A token stops (a = 0 from then on) after a step that
    leaves ||r|| < stop_norm, or, with ``stop_on_repeat``, after a step that left its support unchanged; the
    steps end early once every token has stopped.
    """
    with torch.autocast(r0.device.type, enabled=False):
        return _pursuit(r0.to(W.dtype), W, n_steps, nonneg, update, stop_norm, stop_on_repeat, workspace)


def _pursuit(
    r0: torch.Tensor,
    W: torch.Tensor,
    n_steps: int,
    nonneg: bool,
    update: str,
    stop_norm: torch.Tensor | None,
    stop_on_repeat: bool,
    workspace: torch.Tensor | None,
):
    B = r0.shape[0]
    J = torch.zeros(B, n_steps, dtype=torch.long, device=r0.device)
    A = r0.new_zeros(B, n_steps)
    rn2 = (r0 * r0).sum(-1)
    shrink = 2 - (W * W).sum(1)  # ||r - a d_j||² = ||r||² - a²(2 - ||d_j||²) when a = <r, d_j> (or a = 0)
    gram = _GramRows(W, full_gram(B, n_steps, W.shape[0]), workspace) if update == "gram" else None
    used = 0
    chunk = chunk_tokens(W.shape[0])
    for i in range(0, B, chunk):
        sl = slice(i, min(i + chunk, B))
        stops = _Stops(None if stop_norm is None else stop_norm[sl], stop_on_repeat)
        used = max(used, _pursue(r0[sl], W, shrink, J[sl], A[sl], rn2[sl], nonneg, gram, stops))
    return J[:, :used], A[:, :used], rn2


class _Stops:
    """Which tokens of a chunk have stopped (adaptive inference); inactive when no rule is set."""

    def __init__(self, stop_norm: torch.Tensor | None, on_repeat: bool):
        self.stop_norm, self.on_repeat = stop_norm, on_repeat
        self.active = stop_norm is not None or on_repeat
        self.done: torch.Tensor | None = None

    def mask(self, a: torch.Tensor) -> torch.Tensor | None:
        """Zero the coefficients of stopped tokens; None once every token has stopped."""
        if self.done is None:
            self.done = torch.zeros_like(a, dtype=torch.bool)
        if bool(self.done.all()):
            return None
        return a.masked_fill(self.done, 0)

    def after_step(self, J: torch.Tensor, A: torch.Tensor, s: int, r: torch.Tensor | None) -> None:
        """Step s is applied to the residual ``r``: a token stops once ||r|| < stop_norm, the norm of the residual
        itself (a running ||r||² drifts in fp32: off by 5e-3 after 432 steps at ||x|| = 100), or (on_repeat) when
        the step left its support unchanged (SAELens's rules)."""
        if self.stop_norm is not None:
            self.done |= r.norm(dim=-1) < self.stop_norm
        if self.on_repeat:
            j, a = J[:, s], A[:, s]
            seen = ((J[:, :s] == j.unsqueeze(1)) & (A[:, :s] != 0)).any(1)
            self.done |= (a == 0) | seen


def _pursue(r0, W, shrink, J, A, rn2, nonneg, gram, stops: _Stops) -> int:
    """k steps for one chunk of tokens, writing J, A, rn2 in place; returns the number of steps taken. The
    residual itself is kept when the correlations are recomputed from it or a norm rule needs it; then ``rn2``
    is its exact squared norm, else the running update."""
    c = r0 @ W.t()
    r = r0.clone() if gram is None or stops.stop_norm is not None else None
    synced = None if r is None else r.norm(dim=-1)
    taken = J.shape[1]
    for s in range(J.shape[1]):
        if nonneg:
            a, j = row_max(c)
        else:
            j = row_max(c.abs())[1]
            a = c.gather(1, j.unsqueeze(1)).squeeze(1)
        if r is not None and gram is not None:  # the coefficient from the residual itself, as SAELens takes it
            a = (r * W[j]).sum(-1)
        if nonneg:
            a = a.clamp_min(0)
        if stops.active:
            a = stops.mask(a)
            if a is None:
                taken = s
                break
        J[:, s], A[:, s] = j, a
        if r is None:
            rn2.sub_(a * a * shrink[j])
        else:
            r.addcmul_(W[j], a.unsqueeze(1), value=-1)
        if stops.active:
            stops.after_step(J, A, s, r)
        if s < J.shape[1] - 1:
            if gram is None:
                c = r @ W.t()
            else:
                gram.subtract(c, j, a)
                if r is not None:
                    synced = _resync(c, r, W, synced)
    if r is not None:
        rn2.copy_((r * r).sum(-1))
    return taken


RESYNC = 0.5  # Gram-updated correlations are recomputed from the residual when its norm halves


def _resync(c: torch.Tensor, r: torch.Tensor, W: torch.Tensor, synced: torch.Tensor) -> torch.Tensor:
    """Recompute the correlations of tokens whose residual norm fell below RESYNC x its norm at their last sync.
    The Gram updates' rounding error is absolute (the scale of ||x||), the greedy choice is relative to ||r||: in
    fp32, with ||x|| = 100 and 432 steps towards ||r|| < 0.5, un-synced choices differ from the residual's own
    (SAELens's rule) on 1-2% of tokens. Each token is re-synced about log2(||x|| / ||r_end||) times."""
    norm = r.norm(dim=-1)
    rows = (norm < RESYNC * synced).nonzero().squeeze(1)
    if rows.numel():
        c[rows] = r[rows] @ W.t()
        synced[rows] = norm[rows]
    return synced


class _MPCoefficients(torch.autograd.Function):
    """A = pursuit coefficients of r0 (given J, A from a no-grad pursuit); analytic backward. ``gram``, when
    given, is the Gram matrix of W that the pursuit computed: the backward reads the selected atoms' k x k Grams
    from it, unless it was overwritten in between (then they are recomputed)."""

    @staticmethod
    def forward(ctx, r0, W, J, A, nonneg: bool, gram: torch.Tensor | None = None):
        ctx.save_for_backward(r0, W, J, A)
        ctx.nonneg = nonneg
        ctx.gram, ctx.gram_version = gram, None if gram is None else gram._version
        return A.clone()

    @staticmethod
    def backward(ctx, gA):
        r0, W, J, A = ctx.saved_tensors
        live = (A != 0).to(W.dtype)  # a zero coefficient: clamped (non-negative MP) or its token had stopped
        D = W.new_empty(BACKWARD_CHUNK, J.shape[1], W.shape[1])  # reused for every chunk of tokens
        gram = ctx.gram if ctx.gram is not None and ctx.gram._version == ctx.gram_version else None
        ga = _coefficient_grads(W, J, gA.to(W.dtype), live, D, gram)
        grad_r0 = torch.empty_like(r0)
        grad_W = SparseCode.from_topk(J, W.shape[0]).col_sum(r0, ga.reshape(-1))  # the ga_s r_0 terms
        # dL/dd_s = ga_s r0 - sum_{t != s} C[s, t] d_t with C[s, t] = ga_s a_t (t < s), a_s ga_t (t > s)
        C = torch.tril(ga.unsqueeze(2) * A.unsqueeze(1), -1) + torch.triu(A.unsqueeze(2) * ga.unsqueeze(1), 1)
        CD = torch.empty_like(D)
        for sl, Dc in _atom_chunks(W, J, D):
            torch.bmm(ga[sl].unsqueeze(1), Dc, out=grad_r0[sl].unsqueeze(1))  # sum_t ga_t d_t
            CDc = torch.bmm(C[sl], Dc, out=CD[: len(Dc)])
            grad_W.index_add_(0, J[sl].reshape(-1), CDc.reshape(-1, W.shape[1]), alpha=-1)
        return grad_r0, grad_W, None, None, None, None


BACKWARD_CHUNK = 128  # tokens per backward chunk: [chunk, k, d] buffers reused, never a fresh [B, k, d] tensor


def _atom_chunks(W: torch.Tensor, J: torch.Tensor, buf: torch.Tensor):
    """(token slice, selected atoms [n, k, d]) per chunk of tokens, gathered into ``buf``."""
    for i in range(0, J.shape[0], BACKWARD_CHUNK):
        sl = slice(i, min(i + BACKWARD_CHUNK, J.shape[0]))
        n = sl.stop - sl.start
        yield sl, torch.index_select(W, 0, J[sl].reshape(-1), out=buf[:n].view(-1, W.shape[1])).view(n, -1, W.shape[1])


def _coefficient_grads(
    W: torch.Tensor,
    J: torch.Tensor,
    gA: torch.Tensor,
    live: torch.Tensor,
    buf: torch.Tensor,
    gram: torch.Tensor | None = None,
) -> torch.Tensor:
    """ga_s = dL/d<r_{s-1}, d_s> = live_s (gA_s - <g_s, d_s>), g_s = sum_{t>s} ga_t d_t, by a scalar recursion
    on the per-token k x k Gram M of the selected atoms (gathered from ``gram`` [F, F] when given)."""
    B, k = J.shape
    if gram is not None:
        M = gram.view(-1).index_select(0, (J.unsqueeze(2) * gram.shape[0] + J.unsqueeze(1)).view(-1)).view(B, k, k)
    else:
        M = W.new_empty(B, k, k)
        for sl, Dc in _atom_chunks(W, J, buf):
            torch.bmm(Dc, Dc.transpose(1, 2), out=M[sl])
    ga = torch.zeros_like(gA)
    for s in range(k - 1, -1, -1):
        later = (ga[:, s + 1 :] * M[:, s + 1 :, s]).sum(1)
        ga[:, s] = live[:, s] * (gA[:, s] - later)
    return ga


def mp_coefficients(r0, W, J, A, nonneg: bool, gram: torch.Tensor | None = None) -> torch.Tensor:
    """Differentiable pursuit coefficients (see _MPCoefficients; ``gram``: W's Gram matrix, if at hand)."""
    return _MPCoefficients.apply(r0, W, J, A, nonneg, gram)


class MatchingPursuitConfig(SparseConfig):
    """Options of the MP-SAE: k (training steps) and the pursuit / stopping options."""

    architecture: Literal["matching_pursuit"] = "matching_pursuit"
    mp_nonneg: bool = Field(True, description="select the largest positive inner product; coefficients >= 0")
    mp_update: Literal["gram", "full"] = Field("gram", description="correlation update: Gram matrix or recompute")
    mp_stop: Literal["fixed", "relative", "absolute"] = Field("fixed", description="inference stopping rule")
    mp_threshold: float = Field(0.0, ge=0, description="stop when ||r|| < threshold (* ||x - b_dec|| if relative)")
    mp_k_max: int | None = Field(None, gt=0, description="inference step cap (default k)")
    aux_coef: float = Field(
        1 / 32, ge=0, description="AuxK: a pursuit over the dead atoms on the residual (see mp_auxk); 0 disables"
    )
    aux_k: int | None = Field(None, gt=0, description="AuxK's pursuit steps over the dead atoms (default k)")
    mp_stop_on_repeat: bool = Field(
        False,
        description="inference: stop a token after a step that leaves its support "
        "unchanged (an atom picked again, or a zero coefficient); SAELens's "
        "stop_on_duplicate_support",
    )

    @model_validator(mode="after")
    def _check_stop(self) -> "MatchingPursuitConfig":
        if self.mp_stop == "relative" and self.mp_threshold >= 1:
            raise ValueError(f"mp_threshold={self.mp_threshold} with mp_stop='relative' must be in [0, 1)")
        if self.aux_k is not None and self.d_sae is not None and self.aux_k > self.d_sae:
            raise ValueError(f"aux_k={self.aux_k} exceeds d_sae={self.d_sae}; aux_k must be in [1, {self.d_sae}]")
        return self

    @property
    def mp_inference_steps(self) -> int:
        """The step cap at inference: k, or mp_k_max (default k) when a stopping rule can end a token earlier."""
        adaptive = self.mp_stop != "fixed" or self.mp_stop_on_repeat
        return (self.mp_k_max or self.k) if adaptive else self.k


def mp_auxk(sae, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
    """AuxK for matching pursuit: a short pursuit over the dead atoms only. With the detached residual
    e = x - x_hat, each token runs ``aux_k`` (default k) greedy steps of the SAE's own rule (non-negative or signed)
    over the dead atoms, giving ê; the loss is aux_coef · ||ê - e||² / ||e - mean e||², OpenAI's AuxK
    normalisation. Being a pursuit, ê never reconstructs e worse than predicting zero (each step lowers ||e - ê||),
    whatever the dead atoms are (duplicates, random directions), and minimising the loss pulls the dead atoms towards
    the residual they could explain: the revival AuxK gives TopK. Gradients reach only the dead atoms, through the
    pursuit's coefficients (selection held fixed) and directions."""
    cfg = sae.cfg
    dead = sae.dead_mask()
    if not bool(dead.any()):
        return {}
    idx = dead.nonzero().squeeze(1)
    W_dead = sae.W_dec.index_select(0, idx)
    e = (x.to(W_dead.dtype) - x_hat).detach()
    steps = min(cfg.aux_k or cfg.k, idx.numel())
    J, A, _ = pursuit(e, W_dead.detach(), steps, cfg.mp_nonneg, cfg.mp_update)
    coef = mp_coefficients(e, W_dead, J, A, cfg.mp_nonneg)
    e_hat = sparse_decode(coef.reshape(-1), W_dead, SparseCode.from_topk(J, idx.numel()))
    return {"auxk": cfg.aux_coef * ((e_hat - e) ** 2).sum() / sum_sq_dev(e)}


@register("matching_pursuit")
class MatchingPursuitSAE(BaseSAE):
    """MP-SAE: the code is k greedy pursuit steps over the unit-norm decoder atoms."""

    config_class = MatchingPursuitConfig
    has_encoder = False
    saelens_loads = ("matching_pursuit",)
    # no atom dies at any lr of the sweeps, and of 1.5x, 3x and 6x the base rule 3x has the best FVU at 2,304-9,216
    # atoms (BENCHMARKS.md §13, "The cause: Adam's full-size steps for rare latents")
    auto_lr_scale = 3.0

    @property
    def W_enc(self) -> torch.Tensor:
        return self.W_dec.t()

    @property
    def b_enc(self) -> torch.Tensor:
        return self.W_dec.new_zeros(self.cfg.d_sae)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        lead, xf = x.shape[:-1], x.reshape(-1, x.shape[-1])
        r0 = xf.to(self.W_dec.dtype) - self.b_dec
        stop = None
        if cfg.mp_stop == "relative":
            stop = r0.norm(dim=-1) * cfg.mp_threshold
        elif cfg.mp_stop == "absolute":
            stop = torch.full_like(r0[:, 0], cfg.mp_threshold)
        J, A, _ = pursuit(
            r0.detach(),
            self.W_dec.detach(),
            cfg.mp_inference_steps,
            cfg.mp_nonneg,
            cfg.mp_update,
            stop,
            cfg.mp_stop_on_repeat,
        )
        if torch.is_grad_enabled() and r0.requires_grad:  # the selection held fixed, A is linear in r0
            A = mp_coefficients(r0, self.W_dec, J, A, cfg.mp_nonneg)
        z = SparseCode.from_topk(J, cfg.d_sae).to_dense(A.reshape(-1))
        return z.reshape(*lead, cfg.d_sae)

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        cfg = self.cfg
        r0 = x.to(self.W_dec.dtype) - self.b_dec
        workspace = self._gram_workspace()
        J, A, _ = pursuit(r0.detach(), self.W_dec.detach(), cfg.k, cfg.mp_nonneg, cfg.mp_update, workspace=workspace)
        has_gram = cfg.mp_update == "gram" and full_gram(x.shape[0], cfg.k, cfg.d_sae)
        coef = mp_coefficients(r0, self.W_dec, J, A, cfg.mp_nonneg, workspace if has_gram else None)
        code = SparseCode.from_topk(J, cfg.d_sae)
        x_hat = sparse_decode(coef.reshape(-1), self.W_dec, code) + self.b_dec
        with torch.no_grad():
            fired = self._fired(code, A.reshape(-1))
        aux = mp_auxk(self, x, x_hat) if cfg.aux_coef > 0 else {}  # the dead set before this batch, as TopK's
        with torch.no_grad():
            l0 = float(fired.sum()) / x.shape[0]  # before update_stats sums fired over ranks
            self.update_stats(fired, x.shape[0])
        return TrainOutput(x_hat, aux, fired, l0)

    def _gram_workspace(self) -> torch.Tensor:
        """A [d_sae, d_sae] buffer for each training step's Gram matrix, kept between steps (a fresh one costs
        ~20% of an MP step in page faults). Not a registered buffer: never saved, rebuilt after a device move."""
        W, ws = self.W_dec, getattr(self, "_gram_ws", None)
        if ws is None or ws.device != W.device or ws.dtype != W.dtype:
            ws = self._gram_ws = W.new_empty(W.shape[0], W.shape[0])
        return ws

    def _fired(self, code: SparseCode, a: torch.Tensor) -> torch.Tensor:
        """Per-latent count of tokens with a nonzero coefficient (an atom picked twice counts once)."""
        F = code.n_cols
        keys = (code.rows * F + code.cols)[a != 0]
        keys = keys[_stable_argsort(keys)]
        first = torch.ones_like(keys, dtype=torch.bool)
        first[1:] = keys[1:] != keys[:-1]
        return torch.bincount(keys[first] % F, minlength=F)

    def folded_config(self, scale: float):
        if self.cfg.mp_stop == "absolute":
            return self.cfg.model_copy(update={"mp_threshold": self.cfg.mp_threshold / scale})
        return self.cfg.model_copy()

    # ---- SAELens mapping --------------------------------------------------------------------------
    @classmethod
    def saelens_architecture(cls, cfg: MatchingPursuitConfig) -> str | None:
        """SAELens's matching_pursuit is non-negative with fixed or absolute stopping; other variants have none."""
        return "matching_pursuit" if cfg.mp_nonneg and cfg.mp_stop in ("fixed", "absolute") else None

    @classmethod
    def saelens_fields(cls, cfg: MatchingPursuitConfig) -> dict:
        """SAELens matching_pursuit options for our stopping rule (fixed: exactly k steps)."""
        return {
            "residual_threshold": cfg.mp_threshold if cfg.mp_stop == "absolute" else 0.0,
            "max_iterations": cfg.mp_inference_steps,
            "stop_on_duplicate_support": cfg.mp_stop_on_repeat,
        }

    @classmethod
    def saelens_unmapped_note(cls, cfg: MatchingPursuitConfig) -> str:
        return (
            f"SAELens's matching_pursuit is non-negative with fixed or absolute stopping; this one "
            f"(mp_nonneg={cfg.mp_nonneg}, mp_stop={cfg.mp_stop}) is not: SAELens cannot load it, sae-lab can."
        )

    @classmethod
    def from_saelens(cls, cfg_json: dict, weights: dict[str, torch.Tensor], fields: dict) -> "MatchingPursuitSAE":
        """SAELens's (non-negative, tied) matching_pursuit: its stopping rules map onto ours exactly."""
        steps = int(cfg_json.get("max_iterations") or fields["d_in"])  # SAELens: None means d_in
        threshold = float(cfg_json.get("residual_threshold", 1e-2))  # SAELens: 0 disables the residual rule
        cfg = MatchingPursuitConfig(
            k=min(steps, fields["d_sae"]),
            mp_nonneg=True,
            mp_threshold=threshold,
            mp_stop="absolute" if threshold > 0 else "fixed",
            mp_k_max=steps,
            mp_stop_on_repeat=bool(cfg_json.get("stop_on_duplicate_support", True)),
            **fields,
        )
        sae = cls(cfg)
        b_dec = weights["b_dec"] if cfg_json.get("apply_b_dec_to_input", True) else torch.zeros_like(weights["b_dec"])
        with torch.no_grad():
            sae.W_dec.copy_(weights["W_dec"])
            sae.b_dec.copy_(b_dec)
        return sae
