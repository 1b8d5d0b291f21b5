"""Architecture-specific invariants: selection rules, MP algebra, sparse backward passes, aux losses."""

from __future__ import annotations

import torch

from _train_helpers import adam_steps
from sae_lab.saes import build_sae
from sae_lab.saes.aux import aux_reconstruction_loss, revival_losses, underutilised_mask
from sae_lab.saes.base import geometric_median
from sae_lab.saes.feature_choice import feature_choice_select
from sae_lab.saes.matching_pursuit import mp_coefficients, pursuit, symmetric_gram
from sae_lab.saes.mutual_choice import batch_topk_select
from sae_lab.saes.sparse_ops import SparseCode, gather_preacts, sparse_decode
from sae_lab.saes.zipf import zipf_reference_density, zipf_weights


def make(arch, d_in=16, d_sae=64, k=4, **kw):
    torch.manual_seed(0)
    return build_sae(dict(architecture=arch, d_in=d_in, d_sae=d_sae, k=k, **kw))


def data(n=48, d=16, seed=1):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + 0.5


def test_feature_choice_respects_capacities():
    for rule, kw in (("uniform", {}), ("zipf", {"zipf_alpha": 1.2})):
        sae, x = make("feature_choice", capacity_rule=rule, **kw), data()
        sae.training_forward(x)  # sets the demand ranking
        caps = sae.capacities(x.shape[0])
        assert int(caps.sum()) == sae.cfg.k * x.shape[0] and int(caps.min()) >= 1 and int(caps.max()) <= x.shape[0]
        code, vals, _ = feature_choice_select(sae.pre_acts(x).detach(), caps)
        per_latent = torch.bincount(code.cols, minlength=64)
        assert (per_latent <= caps).all() and (vals > 0).all()
        if rule == "zipf":  # capacity decreases with demand rank
            order = torch.argsort(sae.demand_ema, descending=True)
            assert (caps[order][:-1] >= caps[order][1:]).all() and caps.max() > caps.min()


def test_feature_choice_picks_each_columns_largest():
    pre = torch.randn(20, 6)
    caps = torch.tensor([1, 2, 3, 0, 5, 20])
    code, vals, kth = feature_choice_select(pre, caps)
    dense = code.to_dense(vals)
    for i, m in enumerate(caps.tolist()):
        expect = pre[:, i].relu().topk(m).values if m else torch.zeros(0)
        got = dense[:, i][dense[:, i] > 0].sort(descending=True).values
        assert torch.allclose(got, expect[expect > 0])
    assert torch.isnan(kth[3]) and torch.isclose(kth[1], pre[:, 1].relu().topk(2).values[-1])


def test_mutual_choice_equals_naive_batch_topk():
    pre = torch.randn(40, 64)
    n_keep = 4 * 40
    naive = torch.zeros_like(pre).view(-1)
    v, i = pre.relu().view(-1).topk(n_keep)
    naive[i] = v
    naive = naive.view_as(pre)
    for hint in (0.0, 1.5, 100.0):  # no hint, useful hint, hint too high (falls back to the full search)
        code, vals, t = batch_topk_select(pre, n_keep, hint)
        assert torch.equal(code.to_dense(vals), naive)
        assert t == float(v.min())
    assert (code.rows[1:] >= code.rows[:-1]).all()


def test_mutual_choice_dead_floor_trains_dead_latents_without_reviving_them_in_the_counts():
    """A dead latent that loses the k·B competition still gets its dead_floor best tokens (pre > 0) in the training
    code, so the reconstruction loss trains it; those entries do not count as firing, so it stays dead until it
    wins by the rule itself."""
    x = data(n=64)
    for floor in (0, 3):
        sae = make("mutual_choice", dead_floor=floor, dead_tokens=64)
        with torch.no_grad():
            pre = sae.pre_acts(x)
            won, _, _ = batch_topk_select(pre, sae.cfg.k * 64)
            losers = torch.ones(64, dtype=torch.bool)
            losers[won.cols] = False
            j = int(((pre.max(0).values > 0) & losers).nonzero()[0])  # positive somewhere, never selected
            sae.tokens_since_fired.fill_(0)
            sae.tokens_since_fired[j] = 64  # dead
        out = sae.training_forward(x)
        ((out.x_hat - x) ** 2).sum().backward()
        assert int(out.fired[j]) == 0 and bool(sae.dead_mask()[j])
        row_grad = float(sae.W_enc.grad[:, j].abs().sum())
        if floor == 0:
            assert row_grad == 0.0
        else:
            assert row_grad > 0.0
            assert out.l0 * 64 == won.nnz + min(floor, int((pre[:, j] > 0).sum()))


def test_mp_residual_norm_is_non_increasing_and_tracked():
    torch.manual_seed(0)
    W = torch.nn.functional.normalize(torch.randn(64, 16), dim=1)
    r0 = data()
    for nonneg in (True, False):
        J, A, rn2 = pursuit(r0, W, 10, nonneg=nonneg)
        norms = [r0.norm(dim=1)]
        for s in range(1, 11):
            r = r0 - SparseCode.from_topk(J[:, :s], 64).to_dense(A[:, :s].reshape(-1)) @ W
            norms.append(r.norm(dim=1))
        norms = torch.stack(norms)
        assert (norms[1:] <= norms[:-1] + 1e-5).all() and (norms[-1] < norms[0]).all()
        assert torch.allclose(rn2.clamp_min(0).sqrt(), norms[-1], atol=1e-4)
        if nonneg:
            assert (A >= 0).all()


def naive_mp_xhat(r0, b_dec, W, J, nonneg):
    """Reference: autograd through the unrolled steps with the given selections."""
    r, xh = r0, b_dec.expand_as(r0)
    for s in range(J.shape[1]):
        d = W[J[:, s]]
        a = (r * d).sum(-1, keepdim=True)
        a = a.clamp_min(0) if nonneg else a
        xh, r = xh + a * d, r - a * d
    return xh


def test_mp_gram_equals_full_and_custom_backward_equals_autograd():
    for nonneg in (True, False):
        sae = make("matching_pursuit", k=6, mp_nonneg=nonneg)
        with torch.no_grad():
            sae.b_dec.normal_()
        x = data()
        Jg, Ag, _ = pursuit(x - sae.b_dec.detach(), sae.W_dec.detach(), 6, nonneg, "gram")
        Jf, Af, _ = pursuit(x - sae.b_dec.detach(), sae.W_dec.detach(), 6, nonneg, "full")
        assert torch.equal(Jg, Jf) and torch.allclose(Ag, Af, atol=1e-5)
        grads = []
        for update in ("gram", "full", "naive"):
            sae.zero_grad()
            if update == "naive":
                xh = naive_mp_xhat(x - sae.b_dec, sae.b_dec, sae.W_dec, Jg, nonneg)
            else:
                sae.cfg = sae.cfg.model_copy(update={"mp_update": update})
                xh = sae.training_forward(x).x_hat
            ((xh - x) ** 2).sum().backward()
            grads.append([p.grad.clone() for p in (sae.W_dec, sae.b_dec)])
        for g in grads[1:]:
            assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(grads[0], g))
        assert grads[0][0].abs().sum() > 0


def test_mp_symmetric_gram_and_backward_through_a_stale_gram():
    """The blocked Gram equals W Wᵀ (any width, not a multiple of the blocks) and is exactly symmetric; the backward
    reads the pursuit's Gram, and recomputes when it was overwritten between forward and backward."""
    W = torch.nn.functional.normalize(torch.randn(101, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    G = symmetric_gram(W, W.new_empty(101, 101))
    assert torch.allclose(G, W @ W.t(), atol=1e-6) and torch.equal(G, G.t())
    r0, g = data(), torch.randn(48, 6)
    J, A, _ = pursuit(r0, W, 6, workspace=G)
    grads = []
    for gram, stale in ((None, False), (G, False), (G.clone(), True)):
        Wp, rp = W.clone().requires_grad_(), r0.clone().requires_grad_()
        coef = mp_coefficients(rp, Wp, J, A, True, gram)
        if stale:
            gram.zero_()  # a later pursuit reusing the workspace
        (coef * g).sum().backward()
        grads.append((rp.grad, Wp.grad))
    for rg, wg in grads[1:]:
        assert torch.allclose(rg, grads[0][0], atol=1e-5) and torch.allclose(wg, grads[0][1], atol=1e-5)


def test_mp_pursuit_does_not_depend_on_the_token_chunks(monkeypatch):
    """Tokens are pursued in chunks (chunk_tokens): any chunking gives the same atoms and, up to fp32 rounding (the
    first correlations are one matmul per chunk), the same coefficients and residual norms, with the whole Gram or
    lazily computed rows, with and without stopping rules (a stopped token's later atoms carry no weight)."""
    import sae_lab.saes.matching_pursuit as mp

    W = torch.nn.functional.normalize(torch.randn(64, 16, generator=torch.Generator().manual_seed(2)), dim=1)
    r0 = data()
    cases = [
        dict(n_steps=6),
        dict(n_steps=1),  # 48 x 6 >= 64 atoms: whole Gram; 48 x 1 < 64: rows on use
        dict(n_steps=8, stop_norm=0.5 * r0.norm(dim=1), stop_on_repeat=True),
    ]
    for kw in cases:
        whole = pursuit(r0, W, **kw)
        monkeypatch.setattr(mp, "MIN_CHUNK", 5)
        monkeypatch.setattr(mp, "CHUNK_ELEMENTS", 5 * 64)  # 10 chunks of 5 tokens (the last one 3)
        chunked = pursuit(r0, W, **kw)
        monkeypatch.undo()
        (J1, A1, rn1), (J2, A2, rn2) = whole, chunked
        assert torch.equal(A1 != 0, A2 != 0) and torch.equal(J1[A1 != 0], J2[A2 != 0])
        assert torch.allclose(A1, A2, atol=1e-5) and torch.allclose(rn1, rn2, atol=1e-4)


def test_mp_adaptive_stopping():
    sae = make("matching_pursuit", k=3, mp_stop="relative", mp_threshold=0.3, mp_k_max=40)
    x = data()
    z = sae.encode(x)
    r = (x - sae.decode(z)).norm(dim=1)
    r0 = (x - sae.b_dec).norm(dim=1)
    l0 = (z != 0).sum(1)
    assert ((r < 0.3 * r0 + 1e-5) | (l0 >= 40)).all() and l0.max() > 3 and l0.min() != l0.max()


def test_sparse_ops_match_dense_autograd_gradcheck():
    torch.manual_seed(0)
    B, d, F = 5, 4, 7
    x, b_dec = torch.randn(B, d, dtype=torch.double), torch.randn(d, dtype=torch.double, requires_grad=True)
    W_encT = torch.randn(F, d, dtype=torch.double, requires_grad=True)
    b_enc = torch.randn(F, dtype=torch.double, requires_grad=True)
    W_dec = torch.randn(F, d, dtype=torch.double, requires_grad=True)
    x.requires_grad_(True)
    rows = torch.tensor([0, 0, 1, 2, 2, 2, 4])
    cols = torch.tensor([1, 3, 3, 0, 6, 2, 5])
    code = SparseCode.from_rows_cols(rows, cols, B, F)

    def f(x, b_dec, W_encT, b_enc, W_dec):
        pre = (x - b_dec) @ W_encT.t() + b_enc
        v = gather_preacts(x, b_dec, W_encT, b_enc, code, pre.detach()[rows, cols])
        return sparse_decode(torch.tanh(v), W_dec, code)

    assert torch.autograd.gradcheck(f, (x, b_dec, W_encT, b_enc, W_dec))
    topk_code = SparseCode.from_topk(torch.tensor([[0, 2], [5, 1], [3, 3]]), F)
    vals = torch.randn(6, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, W: sparse_decode(v, W, topk_code), (vals, W_dec))


def test_row_dot_kernels_agree_with_a_direct_computation():
    """The CPU sampled_addmm kernel and the gather fallback (bf16, CUDA) give <row_data[row], table[col]>,
    with empty rows, repeated (row, col) entries and uniform TopK rows."""
    torch.manual_seed(0)
    g, table = torch.randn(6, 5), torch.randn(9, 5)
    codes = [
        SparseCode.from_rows_cols(torch.tensor([0, 0, 0, 2, 5, 5]), torch.tensor([4, 4, 1, 8, 0, 3]), 6, 9),
        SparseCode.from_topk(torch.randint(0, 9, (6, 3)), 9),
    ]
    for code in codes:
        expect = (g[code.rows] * table[code.cols]).sum(1)
        assert torch.allclose(code._row_dot_sddmm(g, table), expect, atol=1e-6)
        assert torch.allclose(code._row_dot_gather(g, table), expect, atol=1e-6)
        assert torch.allclose(code.row_dot(g.bfloat16(), table.bfloat16()).float(), expect, atol=0.1)


def test_topk_sparse_step_matches_dense_reference():
    sae, x = make("topk", aux_coef=0.0), data()
    with torch.no_grad():
        sae.b_dec.normal_()
        sae.b_enc.normal_(0, 0.5)
    ((sae.training_forward(x).x_hat - x) ** 2).sum().backward()
    ours = [p.grad.clone() for p in sae.parameters()]
    sae.zero_grad()
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    idx = pre.topk(4, dim=-1).indices
    z = torch.zeros_like(pre).scatter(-1, idx, pre.gather(-1, idx).relu())
    ((z @ sae.W_dec + sae.b_dec - x) ** 2).sum().backward()
    for a, p in zip(ours, sae.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-4, rtol=1e-4)


def _aux_grads(sae, x, loss_key):
    with torch.no_grad():
        pre = sae.pre_acts(x)
    out = sae.training_forward(x)
    sae.zero_grad()
    losses = revival_losses(sae, x, out.x_hat.detach(), pre)
    losses[loss_key].backward()
    return sae.W_dec.grad.abs().sum(1), sae.W_enc.grad.abs().sum(0)


def test_auxk_touches_only_dead_latents():
    sae, x = make("topk", dead_tokens=1000), data()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[::5] = True
    sae.tokens_since_fired[dead] = 10_000
    sae.tokens_since_fired[~dead] = -10_000  # stays live through this batch
    gdec, genc = _aux_grads(sae, x, "auxk")
    assert (gdec[~dead] == 0).all() and (genc[~dead] == 0).all()
    assert (gdec[dead] > 0).any() and (genc[dead] > 0).any()


def test_underutilised_mask_formula():
    dens = torch.tensor([0.5, 0.1, 0.3, 0.0, 0.02])  # ranks: 0.5->1, 0.3->2, 0.1->3, 0.02->4, 0.0->5
    k, alpha, tol = 1.0, 1.0, 0.5
    q = k * zipf_weights(5, alpha)  # q(r) = r^-1 / H_5
    expect = torch.tensor([0.5 < tol * q[0], 0.1 < tol * q[2], 0.3 < tol * q[1], True, 0.02 < tol * q[3]])
    assert torch.equal(underutilised_mask(dens, k, alpha, tol), expect)
    assert expect.any() and not expect.all()


def test_zipf_reference_density_is_capped_at_one():
    """2,304 latents, k = 32, alpha = 1: the plain law gives the top rank a density of 3.85. The reference caps it
    at 1 and still sums to k, so a latent firing on 90% of tokens at rank 1 is not 'underused'."""
    q = zipf_reference_density(2304, 32, 1.0)
    plain = 32 * zipf_weights(2304, 1.0)
    assert float(plain[0]) > 3.8 and float(q.max()) == 1.0 and int((q == 1.0).sum()) >= 3
    assert abs(float(q.double().sum()) - 32) < 1e-3
    free = q < 1  # below the cap, the shape is still Zipf: q(r) proportional to r^-1
    r = torch.arange(1, 2305, dtype=torch.float64)[free]
    assert torch.allclose(q.double()[free] * r, (q.double()[free] * r)[0].expand(int(free.sum())), rtol=1e-5)
    dens = torch.full((2304,), 1e-3)
    dens[0] = 0.9
    assert not bool(underutilised_mask(dens, 32, 1.0, 0.5)[0])
    small = zipf_reference_density(5, 1.0, 1.0)  # nothing reaches 1: exactly the plain law
    assert torch.allclose(small, zipf_weights(5, 1.0))


def test_aux_zipf_touches_only_underutilised_and_reduces_to_auxk():
    sae, x = make("topk", dead_tokens=1000, aux_zipf=True, zipf_alpha=1.0, aux_zipf_coef=1 / 32), data()
    dead = torch.zeros(64, dtype=torch.bool)
    dead[3::7] = True
    q = sae.cfg.k * zipf_weights(64, 1.0)
    sae.tokens_since_fired[dead] = 10_000
    sae.tokens_since_fired[~dead] = -10_000
    with torch.no_grad():
        pre = sae.pre_acts(x)
    # densities: exactly Zipf for live latents, 0 for dead ones -> underutilised set == dead set
    dens = torch.zeros(64)
    dens[~dead] = q[: int((~dead).sum())]
    sae.density_ema.copy_(dens)
    sae.stats_started.fill_(True)
    assert torch.equal(underutilised_mask(dens, sae.cfg.k, 1.0, 0.5), dead)
    x_hat = sae(x).detach()
    losses = revival_losses(sae, x, x_hat, pre)
    assert torch.allclose(losses["aux_zipf"], losses["auxk"])
    # now make some live latents underused too: gradient reaches exactly the underutilised set
    dens[~dead] = dens[~dead] * torch.linspace(1.0, 0.01, int((~dead).sum()))
    under = underutilised_mask(dens, sae.cfg.k, 1.0, 0.5)
    assert (under & ~dead).any() and not under.all()
    sae.zero_grad()
    aux_reconstruction_loss(sae, x, x_hat, pre, under, 8).backward()
    gdec = sae.W_dec.grad.abs().sum(1)
    assert (gdec[~under] == 0).all() and (gdec[under & ~dead] > 0).any()


def test_choice_thresholds_track_training_density():
    """After training-rule updates, the batch-independent inference rule fires about k per token."""
    for arch in ("mutual_choice", "feature_choice"):
        sae = make(arch, k=4, threshold_momentum=0.2)
        for seed in range(30):
            sae.training_forward(data(n=256, seed=seed))
        l0 = (sae.encode(data(n=512, seed=99)) > 0).sum(1).float().mean()
        assert 2.5 < float(l0) < 6.0, (arch, float(l0))


def test_geometric_median_minimises_distance_sum():
    pts = torch.cat([torch.randn(200, 3), torch.full((20, 3), 50.0)])  # outliers pull the mean, not the median
    gm = geometric_median(pts)

    def cost(y):
        return (pts - y).norm(dim=1).sum()

    assert cost(gm) < cost(pts.mean(0))
    for _ in range(20):
        assert cost(gm) <= cost(gm + 0.05 * torch.randn(3)) + 1e-4
    assert gm.norm() < 2.0 < pts.mean(0).norm()


def test_blocked_row_max_equals_max():
    from sae_lab.saes.matching_pursuit import row_max

    torch.manual_seed(0)
    for width in (256, 4608, 200):  # blocked (multiples of 128) and the plain fallback
        c = torch.randn(37, width)
        c[3, 5] = c[3, 130] = c[3].max() + 1  # a tie across blocks: the first index wins, as for Tensor.max
        v, i = row_max(c)
        assert torch.equal(v, c.max(-1).values) and torch.equal(i, c.argmax(-1)) and i[3] == 5


def saelens_mp_rule(r0, W, threshold, max_iterations, stop_on_duplicate_support):
    """Reference: SAELens's MP encoder rule (sae_lens/saes/matching_pursuit_sae.py, `_encode_matching_pursuit`),
    restated densely. Each iteration: j = argmax ReLU(r Wᵀ); v = ReLU(<r, W_j>) (no division by ||W_j||²);
    z_j += v and r -= v W_j for tokens not done; then a token is done if its support did not change (when
    stop_on_duplicate_support) or ||r|| < threshold (when threshold > 0); stop when all are done."""
    r, z = r0.clone(), torch.zeros(r0.shape[0], W.shape[0], dtype=r0.dtype)
    prev, done = torch.zeros_like(z, dtype=torch.bool), torch.zeros(r0.shape[0], dtype=torch.bool)
    for _ in range(max_iterations):
        j = (r @ W.t()).relu().argmax(1)
        v = (r * W[j]).sum(1).relu() * (~done)
        z[torch.arange(len(j)), j] += v
        r = r - v.unsqueeze(1) * W[j]
        support = z != 0
        if stop_on_duplicate_support:
            done |= (support == prev).all(1)
            prev = support
        if threshold > 0:
            done |= r.norm(dim=1) < threshold
        if bool(done.all()):
            break
    return z, r


def test_mp_stopping_rules_match_saelens_with_non_unit_atoms():
    """SAELens MP SAEs load with their decoder rows as they are (norms 0.5-1.46 here): the residual-norm
    bookkeeping and both stopping rules must give SAELens's codes on every token."""
    g = torch.Generator().manual_seed(3)
    W = torch.nn.functional.normalize(torch.randn(64, 16, generator=g, dtype=torch.double), dim=1)
    W = W * torch.linspace(0.5, 1.46, 64, dtype=torch.double)[torch.randperm(64, generator=g)].unsqueeze(1)
    r0 = torch.randn(200, 16, generator=g, dtype=torch.double) * 2
    for threshold in (0.0, 1.5, 3.0):
        for on_repeat in (False, True):
            stop = torch.full((200,), threshold, dtype=torch.double) if threshold else None
            J, A, rn2 = pursuit(r0, W, 40, nonneg=True, stop_norm=stop, stop_on_repeat=on_repeat)
            z = SparseCode.from_topk(J, 64).to_dense(A.reshape(-1))
            z_ref, r_ref = saelens_mp_rule(r0, W, threshold, 40, on_repeat)
            assert torch.allclose(z, z_ref, atol=1e-9), (threshold, on_repeat)
            assert torch.allclose(rn2, (r_ref * r_ref).sum(1), atol=1e-8)  # tracked ||r||², never negative
            if threshold:
                l0 = (z != 0).sum(1)
                assert l0.min() < l0.max()  # the rule stops tokens at different steps: the test sees it


def fp32_pursuit_case(seed: int = 0, d: int = 32, F: int = 128):
    """The issue's fp32 case: non-unit atoms (norms 0.5-1.5), 256 tokens with ||x|| = 100, up to 432 steps."""
    g = torch.Generator().manual_seed(seed)
    W = torch.nn.functional.normalize(torch.randn(F, d, generator=g), dim=1) * (0.5 + torch.rand(F, 1, generator=g))
    r0 = torch.randn(256, d, generator=g)
    return W, r0 / r0.norm(dim=1, keepdim=True) * 100


def test_mp_norm_stop_is_saelens_rule_in_fp32():
    """In fp32 a token stops exactly at the first step whose residual, computed as SAELens computes it
    (r -= v·d_j, then ||r||), is below the threshold; a running ||r||² update drifts enough to move the stop."""
    for seed in range(3):
        W, r0 = fp32_pursuit_case(seed)
        J, A, rn2 = pursuit(r0, W, 432, nonneg=True, stop_norm=torch.full((256,), 0.5))
        steps = (A != 0).sum(1)
        r, expect = r0.clone(), torch.full((256,), -1)
        for s in range(J.shape[1]):  # replay the chosen atoms and coefficients with SAELens's arithmetic
            r = r - A[:, s : s + 1] * W[J[:, s]]
            expect = torch.where((expect < 0) & (r.norm(dim=1) < 0.5), s + 1, expect)
        expect = torch.where(expect < 0, J.shape[1], expect)
        assert torch.equal(steps, expect), (seed, int((steps != expect).sum()))
        assert steps.min() < steps.max() and int((steps < 432).sum()) > 200  # the rule decides here
        assert torch.allclose(rn2, (r * r).sum(1), rtol=1e-4)


def test_mp_adaptive_codes_agree_with_saelens_in_fp32():
    """Whole codes against SAELens's rule run in fp32: the Gram-updated correlations are re-synced from the
    residual as it shrinks, and coefficients are taken from the residual, so only near-ties differ."""
    differ = 0
    for seed in range(3):
        W, r0 = fp32_pursuit_case(seed)
        J, A, _ = pursuit(r0, W, 432, nonneg=True, stop_norm=torch.full((256,), 0.5))
        z = SparseCode.from_topk(J, W.shape[0]).to_dense(A.reshape(-1))
        z_ref, _ = saelens_mp_rule(r0, W, 0.5, 432, False)
        differ += int((~torch.isclose(z, z_ref, atol=1e-4, rtol=1e-4)).any(1).sum())
    assert differ <= 4, differ  # of 768 tokens; without the re-sync 9-12 differ in these three draws


def test_mp_encode_gradient_matches_finite_differences():
    """encode(x) has a gradient with respect to x (the selection held fixed; the coefficients are linear in x):
    autograd against central differences in float64, for fixed, non-negative, signed and adaptive pursuits."""
    for kw in (
        {},
        {"mp_nonneg": False},
        {"mp_stop": "absolute", "mp_threshold": 1.0, "mp_k_max": 12},
        {"mp_nonneg": False, "mp_stop": "relative", "mp_threshold": 0.3, "mp_k_max": 12},
    ):
        sae = make("matching_pursuit", k=6, **kw).double()
        x = data(n=8).double().requires_grad_(True)
        w = torch.randn(8, 64, generator=torch.Generator().manual_seed(5), dtype=torch.double)
        z = sae.encode(x)
        (grad,) = torch.autograd.grad((z * w).sum(), [x])
        assert grad.abs().sum() > 0, kw
        numeric = torch.zeros_like(x)
        with torch.no_grad():
            for j in range(x.shape[1]):  # tokens are encoded independently: perturb coordinate j of all at once
                step = torch.zeros_like(x)
                step[:, j] = 1e-6
                zp, zm = sae.encode(x + step), sae.encode(x - step)
                assert torch.equal(zp != 0, z != 0) and torch.equal(zm != 0, z != 0)  # same selection
                numeric[:, j] = ((zp - zm) * w).sum(1) / 2e-6
        assert torch.allclose(grad, numeric, atol=1e-6, rtol=1e-5), kw
    with torch.no_grad():  # no autograd: the plain pursuit, no graph
        assert not make("matching_pursuit", k=6).encode(data(n=8).requires_grad_(True)).requires_grad


def dense_dead_pursuit(e, W, dead, steps):
    """Reference: non-negative MP over the dead atoms, a plain autograd loop (r -= a d_j, a = ReLU<r, d_j>)."""
    r, e_hat = e.clone(), torch.zeros_like(e)
    for _ in range(steps):
        c = torch.where(dead, (r @ W.t()).detach(), torch.full((e.shape[0], W.shape[0]), -float("inf"), dtype=e.dtype))
        j = c.argmax(1)
        a = (r * W[j]).sum(1).relu()
        e_hat = e_hat + a.unsqueeze(1) * W[j]
        r = r - a.unsqueeze(1) * W[j]
    return e_hat


def test_mp_auxk_is_a_pursuit_over_dead_atoms_against_a_dense_reference():
    """MP's AuxK (aux_coef > 0): aux_k pursuit steps over the dead atoms on the detached residual e; loss and
    gradients match a dense autograd pursuit, and only dead atoms receive gradient."""
    sae = make("matching_pursuit", k=4, aux_coef=0.5, aux_k=3, dead_tokens=10).double()
    x = data().double()
    with torch.no_grad():
        sae.tokens_since_fired[::3] = 100  # every third atom dead
    dead = sae.dead_mask().clone()
    out = sae.training_forward(x)
    sae.zero_grad()
    out.aux_losses["auxk"].backward()
    got = sae.W_dec.grad.clone()

    W = sae.W_dec.detach().clone().requires_grad_(True)
    e = (x - out.x_hat).detach()
    e_hat = dense_dead_pursuit(e, W, dead, 3)
    ref = 0.5 * ((e_hat - e) ** 2).sum() / ((e - e.mean(0)) ** 2).sum()
    ref.backward()
    assert torch.allclose(out.aux_losses["auxk"], ref, rtol=1e-9)
    assert torch.allclose(got, W.grad, atol=1e-9) and got[~dead].abs().sum() == 0 and got[dead].abs().sum() > 0
    off = make("matching_pursuit", k=4, aux_coef=0.0, dead_tokens=10)
    with torch.no_grad():
        off.tokens_since_fired[::3] = 100
    assert "auxk" not in off.training_forward(x.float()).aux_losses  # aux_coef = 0 turns it off


def test_mp_auxk_never_worse_than_predicting_zero():
    """The old AuxK summed the top aux_k dead atoms weighted by their correlations: with 4,608 random dead atoms
    its reconstruction was 2.99x worse than predicting zero, with 5 duplicates 16x. A pursuit cannot be."""
    for d_sae, duplicates in ((4608, 0), (64, 5)):
        sae = make("matching_pursuit", d_in=64, d_sae=d_sae, k=8, aux_coef=1.0, dead_tokens=10)
        x = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            if duplicates:
                sae.W_dec[:duplicates] = sae.W_dec[0]
                sae.tokens_since_fired[:duplicates] = 100
            else:
                sae.tokens_since_fired[:] = 100
        out = sae.training_forward(x)
        e = (x - out.x_hat).detach()
        zero = float((e**2).sum() / ((e - e.mean(0)) ** 2).sum())  # the loss of ê = 0
        assert float(out.aux_losses["auxk"].detach()) <= zero * (1 + 1e-5), (d_sae, duplicates)


def test_mp_auxk_revives_planted_dead_atoms():
    """A quarter of the atoms start near the negated data mean: non-negative MP never picks them (all dead at the
    start). Without AuxK most stay dead (a few drift back as the live atoms move); with it all fire again."""
    g = torch.Generator().manual_seed(0)
    D = torch.nn.functional.normalize(torch.randn(128, 32, generator=g), dim=1)
    codes = (torch.rand(8192, 128, generator=g) < 0.03) * (torch.rand(8192, 128, generator=g) + 0.5)
    X = codes @ D + 6.0 * torch.nn.functional.normalize(torch.ones(32), dim=0)
    dead_fraction = {}
    for aux_coef in (0.0, 1 / 8):
        sae = make("matching_pursuit", d_in=32, d_sae=256, k=4, aux_coef=aux_coef, dead_tokens=2048)
        with torch.no_grad():
            sae.b_dec.zero_()  # b_dec at 0 keeps the mean in the data, so the planted atoms correlate negatively
            sae.W_dec[:64] = -torch.nn.functional.normalize(X.mean(0), dim=0) + 0.05 * torch.randn(64, 32)
            sae.normalize_decoder()
            assert not (sae.encode(X[:4096]) != 0).any(0)[:64].any()  # planted dead
        adam_steps(sae, (X[(step * 256) % 8192 :][:256] for step in range(150)))
        with torch.no_grad():
            fired = (sae.encode(X[:4096]) != 0).any(0)
        dead_fraction[aux_coef] = float((~fired[:64]).float().mean())
    assert dead_fraction[0.0] > 0.5 and dead_fraction[1 / 8] < 0.1, dead_fraction
