"""The per-step math: order of operations, clipping, decoder geometry, b_dec init and seeding."""

from __future__ import annotations

import pytest
import torch

from _train_helpers import BATCH, architectures, planted_source, sae_cfg, train_cfg
from sae_lab.saes import build_sae
from sae_lab.training import train_step, train_sweep
from sae_lab.training.schedule import make_scheduler
from sae_lab.training.state import build_saes
from sae_lab.training.step import make_optimizer, recon_errors


def test_step_order_clipping_and_parallel_grad_removal():
    sae = build_sae(sae_cfg())
    calls: list[str] = []
    seen: dict = {}
    for name in ("remove_parallel_grads", "normalize_decoder"):
        method = getattr(sae, name)
        setattr(sae, name, lambda m=method, n=name: (calls.append(n), m())[1])
    opt = make_optimizer(sae, train_cfg().lr, (0.9, 0.999), 1e-8)

    def before_adam(optimizer, args, kwargs):
        calls.append("adam")
        grads = [p.grad for p in sae.parameters()]
        seen["norm"] = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        seen["parallel"] = float((sae.W_dec.grad * sae.W_dec.detach()).sum(1).abs().max())

    opt.register_step_pre_hook(before_adam)
    sched = make_scheduler(opt, train_cfg())
    x = next(planted_source().iter_batches(BATCH))
    stats = train_step(sae, opt, sched, x, grad_clip=1e-3, grad_hook=lambda s: calls.append("grad_hook"))
    assert calls == ["grad_hook", "remove_parallel_grads", "adam", "normalize_decoder"]
    assert float(stats.grad_norm) > 1e-3 and seen["norm"] <= 1e-3 * 1.001  # clipped to grad_clip
    assert seen["parallel"] < 1e-6  # no gradient component along the decoder rows
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(sae.cfg.d_sae), atol=1e-5)
    assert sched.last_epoch == 1 and stats.lr == pytest.approx(train_cfg().lr / 3)  # first warm-up step


def test_recon_errors_define_mse_and_fvu():
    x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    x_hat = torch.tensor([[1.0, 3.0], [3.0, 4.0]])
    mse, fvu = recon_errors(x, x_hat)
    assert float(mse) == pytest.approx((1 + 4) / 4)
    assert float(fvu) == pytest.approx(5 / (1 + 4 + 1 + 4))  # variance around the batch mean [2, 4]


@pytest.mark.parametrize("arch", architectures())
def test_decoder_rows_stay_unit_norm_in_training(tmp_path, arch):
    result = train_sweep([sae_cfg(arch)], planted_source(), train_cfg(), tmp_path / "r", stop_after_tokens=6 * BATCH)
    (sae,) = result.saes.values()  # paused after 6 steps: not yet judged against the divergence rule
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(sae.cfg.d_sae), atol=1e-5)


@pytest.mark.parametrize("method", ["mean", "geometric_median", "zeros"])
def test_b_dec_starts_from_the_first_tokens_of_the_stream(tmp_path, method):
    source = planted_source(norm_scale=3.0)
    cfg = train_cfg(lr=1e-12, b_dec_init=method, b_dec_init_tokens=160)
    result = train_sweep([sae_cfg()], source, cfg, tmp_path / "r", stop_after_tokens=2 * BATCH)  # 2 steps, paused
    batches = source.iter_batches(BATCH, seed=cfg.seed)
    sample = torch.cat([next(batches) for _ in range(3)])[:160]
    b_dec = result.saes["topk_k4"].b_dec.detach()
    if method == "mean":
        assert torch.allclose(b_dec, sample.mean(0), atol=1e-5)
    elif method == "zeros":
        assert b_dec.abs().max() < 1e-9  # only the 2 tiny Adam steps moved it
    else:  # closer to every sample point in total than the mean is
        dist = lambda c: (sample - c).norm(dim=1).sum()  # noqa: E731
        assert dist(b_dec) < dist(sample.mean(0)) and not torch.allclose(b_dec, sample.mean(0), atol=1e-3)


def test_seed_fixes_the_initial_weights():
    a, b = build_saes([sae_cfg()], seed=0)[0], build_saes([sae_cfg()], seed=0)[0]
    c = build_saes([sae_cfg()], seed=1)[0]
    assert torch.equal(a.W_enc, b.W_enc) and not torch.equal(a.W_enc, c.W_enc)


@pytest.mark.parametrize("arch", architectures())
def test_bfloat16_compute_trains_every_architecture(tmp_path, arch):
    """train.dtype=bfloat16 (autocast) trains every architecture about as well as float32; parameters stay
    float32."""
    fvu = {}
    for dtype in ("float32", "bfloat16"):
        result = train_sweep([sae_cfg(arch)], planted_source(), train_cfg(dtype=dtype), tmp_path / dtype)
        (sae,) = result.saes.values()
        assert result.status == "done" and all(p.dtype == torch.float32 for p in sae.parameters())
        fvu[dtype] = result.results[sae.cfg.name].metrics["fvu"]
    assert fvu["bfloat16"] == pytest.approx(fvu["float32"], rel=0.05, abs=0.01)


def test_matching_pursuit_selection_ignores_autocast():
    """Greedy selection runs in float32 even under bf16 autocast: the same atoms and coefficients."""
    from sae_lab.saes.matching_pursuit import pursuit

    sae, x = build_sae(sae_cfg("matching_pursuit", d_sae=512)), planted_data_batch()
    r0 = x - sae.b_dec.detach()
    J, A, _ = pursuit(r0, sae.W_dec.detach(), 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        Jb, Ab, _ = pursuit(r0, sae.W_dec.detach(), 4)
    assert torch.equal(J, Jb) and Ab.dtype == torch.float32 and torch.allclose(A, Ab)


def planted_data_batch() -> torch.Tensor:
    return next(planted_source().iter_batches(BATCH))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_eager_adam_updates_a_transposed_parameter_like_torch_adam(amsgrad):
    """W_enc is a transposed view: EagerAdam updates it through .t() views (no copies), with the same result as
    torch.optim.Adam, whatever the gradient's layout."""
    from sae_lab.training.optim import EagerAdam

    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(7, 5).t())  # [5, 7], stored transposed like W_enc
    q = torch.nn.Parameter(p.detach().clone())  # a contiguous copy for the reference
    ours = EagerAdam([p], lr=1e-2, fused=True, amsgrad=amsgrad)
    ref = torch.optim.Adam([q], lr=1e-2, fused=True, amsgrad=amsgrad)
    storage = p.data_ptr()
    for step in range(4):
        g = torch.randn(5, 7) if step % 2 else torch.randn(7, 5).t()  # both gradient layouts
        p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    assert torch.equal(p, q) and p.data_ptr() == storage and not p.is_contiguous()
    assert torch.equal(ours.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"])
    p.grad = torch.randn(7, 5).t()  # the layout the sparse backward gives W_enc
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
        ours.step()
    copies = [e.input_shapes for e in prof.events() if e.name == "aten::copy_" and e.input_shapes[0]]
    assert not copies  # torch.optim.Adam copies p and its grad to contiguous tensors and back


def test_eager_adam_is_torch_adam_without_the_dynamo_import():
    import subprocess
    import sys
    import textwrap

    from sae_lab.training.optim import EagerAdam

    torch.manual_seed(0)
    p1, p2 = torch.nn.Parameter(torch.randn(6, 5)), torch.nn.Parameter(torch.randn(5))
    q1, q2 = torch.nn.Parameter(p1.detach().clone()), torch.nn.Parameter(p2.detach().clone())
    ours = EagerAdam([p1, p2], lr=1e-2, fused=True)
    ref = torch.optim.Adam([q1, q2], lr=1e-2, fused=True)
    for _ in range(3):
        for a, b in ((p1, q1), (p2, q2)):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        ours.step()
        ref.step()
    assert torch.equal(p1, q1) and torch.equal(p2, q2)
    plain = torch.optim.Adam([q1, q2], lr=1e-2, fused=True)
    plain.load_state_dict(ours.state_dict())  # checkpoints stay torch.optim.Adam's format
    assert torch.equal(plain.state_dict()["state"][0]["exp_avg"], ours.state_dict()["state"][0]["exp_avg"])
    code = textwrap.dedent("""
        import sys, torch
        from sae_lab.saes import build_sae
        from sae_lab.training.step import make_optimizer, train_step
        from sae_lab.training.config import TrainConfig
        from sae_lab.training.schedule import make_scheduler
        sae = build_sae({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 2})
        opt = make_optimizer(sae, 1e-3, (0.9, 0.999), 1e-8)
        sched = make_scheduler(opt, TrainConfig(batch_size=4, total_tokens=8))
        train_step(sae, opt, sched, torch.randn(4, 8), grad_clip=1.0)
        opt.load_state_dict(opt.state_dict())
        print("torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "building or stepping the optimiser imported torch._dynamo (seconds of start-up)"
