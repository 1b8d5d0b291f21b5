"""Matching-pursuit SAE (Costa, Fel, Lubana, Tolooshams, Ba 2025).

Encoder = k greedy steps on the residual, starting from r = x - b_dec:
    j = argmax_j <r, d_j>   (mp_nonneg: the largest positive one, coefficient a = max(<r,d_j>, 0);
                             otherwise classic MP: j = argmax |<r,d_j>|, a = <r,d_j>)
    z_j += a ;  r -= a d_j
and x_hat = z W_dec + b_dec. Atoms are unit norm, so ||r||² drops by a² each step (never grows).

Correlations c = r W_decᵀ are computed once; each step then either recomputes them (``mp_update='full'``,
O(B·d·F) per step) or updates them through rows of the Gram matrix G = W_dec W_decᵀ (``'gram'``:
c -= a G[j], O(B·F) per step). Gram rows are computed lazily, only for atoms actually selected in the batch, and tokens are pursued in
chunks of CHUNK so that a chunk's correlations stay in cache during its k steps.

Backward: a custom autograd Function keeps only the selected indices J [B,k] and coefficients A [B,k]; it
rebuilds the residuals r_{s-1} = r_0 - Σ_{t<s} a_t d_{j_t} and back-propagates analytically through the
unrolled chain (selection is piecewise constant). With g_s = dL/dr_s = Σ_{t>s} ga_t d_t,
    ga_s = dL/d<r_{s-1}, d_s> = (dL/da_s - <g_s, d_s>) · 1[a_s > 0 if mp_nonneg]
    dL/dd_s = ga_s · r_{s-1} - a_s · g_s ,   dL/dr_0 = Σ_t ga_t d_t .
The scalar recursion for ga uses the per-token k x k Gram of the selected atoms; the rest is vectorised.
No [B, F] correlation matrix is stored for the backward.

Inference: ``mp_stop='fixed'`` runs k steps; 'relative'/'absolute' stop a token once ||r|| < mp_threshold
(· ||x - b_dec|| if relative) or after mp_k_max steps.

There is no separate encoder: the first correlations are (x - b_dec) W_decᵀ, so ``W_enc`` is exposed as the
read-only view W_decᵀ and ``b_enc`` as zeros (not parameters, not saved).
"""

from __future__ import annotations

import torch

from sae_lab.saes.base import BaseSAE, TrainOutput
from sae_lab.saes.registry import register
from sae_lab.saes.sparse_ops import SparseCode, _stable_argsort, sparse_decode


class _GramRows:
    """Rows of G = W Wᵀ: all at once when most atoms will be selected (one large matmul is ~2.5x faster
    than many row blocks), else computed on first use (only for atoms some token selects) and cached."""

    def __init__(self, W: torch.Tensor, full: bool = False):
        F = W.shape[0]
        self.W = W
        if full:
            self.G, self.n = W @ W.t(), F
            self.slot = torch.arange(F, device=W.device)
            return
        self.G, self.n = W.new_empty(F, F), 0
        self.slot = torch.full((F,), -1, dtype=torch.long, device=W.device)

    def rows(self, j: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        missing = j[self.slot[j] < 0]
        if missing.numel():
            new = torch.unique(missing)
            n0, n1 = self.n, self.n + new.numel()
            torch.mm(self.W[new], self.W.t(), out=self.G[n0:n1])  # written in place: no copy
            self.slot[new] = torch.arange(n0, n1, device=j.device)
            self.n = n1
        return torch.index_select(self.G, 0, self.slot[j], out=out)


CHUNK = 128  # tokens pursued together: their [chunk, F] correlations stay in cache across the k steps


@torch.no_grad()
def pursuit(r0: torch.Tensor, W: torch.Tensor, n_steps: int, nonneg: bool = True, update: str = "gram",
            stop_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy steps from residual ``r0 [B, d]`` over unit-norm atoms ``W [F, d]``.

    Returns (J long[B, n], A [B, n], final ||r||² [B]). Tokens with ||r|| < stop_norm get a = 0 from then on
    (and the steps end early once every token has stopped).
    """
    B = r0.shape[0]
    J = torch.zeros(B, n_steps, dtype=torch.long, device=r0.device)
    A = r0.new_zeros(B, n_steps)
    rn2 = (r0 * r0).sum(-1)
    gram = _GramRows(W, full=B * n_steps >= W.shape[0]) if update == "gram" else None
    buf = r0.new_empty(min(B, CHUNK), W.shape[0])
    used = 0
    for i in range(0, B, CHUNK):
        sl = slice(i, min(i + CHUNK, B))
        stop = None if stop_norm is None else stop_norm[sl]
        used = max(used, _pursue(r0[sl], W, J[sl], A[sl], rn2[sl], nonneg, gram, buf, stop))
    return J[:, :used], A[:, :used], rn2


def _pursue(r0, W, J, A, rn2, nonneg, gram, buf, stop) -> int:
    """k steps for one chunk of tokens, writing J, A, rn2 in place; returns the number of steps taken."""
    c = r0 @ W.t()
    r = r0.clone() if gram is None else None
    n_steps = J.shape[1]
    for s in range(n_steps):
        if nonneg:
            a, j = c.max(-1)
            a = a.clamp_min(0)
        else:
            j = c.abs().argmax(-1)
            a = c.gather(1, j.unsqueeze(1)).squeeze(1)
        if stop is not None:
            active = rn2 > stop * stop
            if not bool(active.any()):
                return s
            a = a * active
        J[:, s], A[:, s] = j, a
        rn2.sub_(a * a)
        if s == n_steps - 1:
            break
        if gram is not None:
            c.addcmul_(gram.rows(j, buf[: j.numel()]), a.unsqueeze(1), value=-1)
        else:
            r.addcmul_(W[j], a.unsqueeze(1), value=-1)
            c = r @ W.t()
    return n_steps


class _MPCoefficients(torch.autograd.Function):
    """A = pursuit coefficients of r0 (given J, A from a no-grad pursuit); analytic backward."""

    @staticmethod
    def forward(ctx, r0, W, J, A, nonneg: bool):
        ctx.save_for_backward(r0, W, J, A)
        ctx.nonneg = nonneg
        return A.clone()

    @staticmethod
    def backward(ctx, gA):
        r0, W, J, A = ctx.saved_tensors
        B, k = J.shape
        D = W[J]  # [B, k, d] selected atoms
        M = torch.bmm(D, D.transpose(1, 2))  # [B, k, k] <d_t, d_s>
        gA = gA.to(W.dtype)
        live = (A != 0).to(W.dtype) if ctx.nonneg else torch.ones_like(A)
        # ga_s = dL/d<r_{s-1}, d_s> = live_s (gA_s - <g_s, d_s>),  g_s = dL/dr_s = sum_{t>s} ga_t d_t
        ga = torch.zeros_like(A)
        for s in range(k - 1, -1, -1):
            later = (ga[:, s + 1 :] * M[:, s + 1 :, s]).sum(1)
            ga[:, s] = live[:, s] * (gA[:, s] - later)
        C = D * A.unsqueeze(-1)  # a_t d_t
        R = torch.cumsum(C, 1).sub_(C).neg_().add_(r0.unsqueeze(1))  # r_{s-1} = r0 - sum_{t<s} a_t d_t
        GD = D.mul_(ga.unsqueeze(-1))  # ga_t d_t (D no longer needed)
        G = torch.cumsum(GD, 1).neg_().add_(GD.sum(1, keepdim=True))  # g_s = sum_{t>s} ga_t d_t
        grad_r0 = G[:, 0] + GD[:, 0]
        gD = R.mul_(ga.unsqueeze(-1)).sub_(G.mul_(A.unsqueeze(-1)))  # dL/dd_s = ga_s r_{s-1} - a_s g_s
        code = SparseCode.from_topk(J, W.shape[0])
        perm, offs = code.by_col()
        grad_W = torch.nn.functional.embedding_bag(perm, gD.reshape(B * k, -1), offs, mode="sum")
        return grad_r0, grad_W, None, None, None


def mp_coefficients(r0, W, J, A, nonneg: bool) -> torch.Tensor:
    """Differentiable pursuit coefficients (see _MPCoefficients)."""
    return _MPCoefficients.apply(r0, W, J, A, nonneg)


@register("matching_pursuit")
class MatchingPursuitSAE(BaseSAE):
    """MP-SAE: the code is k greedy pursuit steps over the unit-norm decoder atoms."""

    has_encoder = False

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
        stop, n = None, cfg.k
        if cfg.mp_stop != "fixed":
            n = cfg.mp_k_max or cfg.k
            stop = r0.norm(dim=-1) * cfg.mp_threshold if cfg.mp_stop == "relative" else torch.full_like(r0[:, 0], cfg.mp_threshold)
        J, A, _ = pursuit(r0.detach(), self.W_dec.detach(), n, cfg.mp_nonneg, cfg.mp_update, stop)
        z = SparseCode.from_topk(J, cfg.d_sae).to_dense(A.reshape(-1))
        return z.reshape(*lead, cfg.d_sae)

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        cfg = self.cfg
        r0 = x.to(self.W_dec.dtype) - self.b_dec
        J, A, _ = pursuit(r0.detach(), self.W_dec.detach(), cfg.k, cfg.mp_nonneg, cfg.mp_update)
        coef = mp_coefficients(r0, self.W_dec, J, A, cfg.mp_nonneg)
        code = SparseCode.from_topk(J, cfg.d_sae)
        x_hat = sparse_decode(coef.reshape(-1), self.W_dec, code) + self.b_dec
        with torch.no_grad():
            fired = self._fired(code, A.reshape(-1))
            self.update_stats(fired, x.shape[0])
        return TrainOutput(x_hat, {}, fired, float(fired.sum()) / x.shape[0])

    def _fired(self, code: SparseCode, a: torch.Tensor) -> torch.Tensor:
        """Per-latent count of tokens with a nonzero coefficient (an atom picked twice counts once)."""
        F = code.n_cols
        keys = (code.rows * F + code.cols)[a != 0]
        keys = keys[_stable_argsort(keys, code.n_rows * F)]
        first = torch.ones_like(keys, dtype=torch.bool)
        first[1:] = keys[1:] != keys[:-1]
        return torch.bincount(keys[first] % F, minlength=F)

    def folded_config(self, scale: float):
        if self.cfg.mp_stop == "absolute":
            return self.cfg.model_copy(update={"mp_threshold": self.cfg.mp_threshold / scale})
        return self.cfg.model_copy()
