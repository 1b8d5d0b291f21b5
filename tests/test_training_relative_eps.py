"""The relative encoder eps (train.encoder_eps_ratio): Adam's step for a rarely updated encoder row shrinks with its
gradient instead of being as large as a busy row's; the other parameters keep the plain eps; resume stays exact."""

from __future__ import annotations

import pytest
import torch

from _train_helpers import BATCH, planted_source, sae_cfg, train_cfg
from sae_lab.saes import build_sae
from sae_lab.training import train_sweep
from sae_lab.training.optim import refresh_relative_eps
from sae_lab.training.step import make_optimizer


def encoder_moves(ratio: float, steps: int = 20) -> torch.Tensor:
    """How far each encoder row moves when rows 0-6 get a steady gradient every step and row 7 one 100x smaller
    gradient at step 5 only (a latent that fired once): the row norms of the change of W_enc."""
    sae = build_sae(sae_cfg("topk", d_sae=8))
    opt = make_optimizer(sae, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, encoder_eps_ratio=ratio)
    g = torch.Generator().manual_seed(0)
    busy = torch.randn(sae.W_enc.shape, generator=g) * 1e-3
    start = sae.W_enc.detach().clone()
    for step in range(steps):
        for p in sae.parameters():
            p.grad = torch.zeros_like(p)
        grad = busy.clone()
        grad[:, 7] = busy[:, 7] * 1e-2 if step == 5 else 0.0
        sae.W_enc.grad = torch.empty_like(sae.W_enc).copy_(grad)  # autograd's layout (W_enc is a transposed view)
        opt.step()
    return (sae.W_enc.detach() - start).norm(dim=0)  # W_enc is [d_in, d_sae]: one column per latent


def busy_steps(moves: torch.Tensor, steps: int = 20) -> float:
    """Row 7's move in units of one step of a busy row."""
    return float(moves[7] / (moves[:7].mean() / steps))


def test_plain_adam_moves_a_once_updated_row_as_far_as_several_full_steps():
    assert busy_steps(encoder_moves(0.0)) > 3  # the mechanism that kills rare latents at high lr


def test_relative_eps_moves_a_once_updated_row_in_proportion_to_its_gradient():
    moves = encoder_moves(1.0)
    assert busy_steps(moves) < 0.1, moves
    assert moves[:7].min() > 0.3 * encoder_moves(0.0)[:7].min()  # busy rows still take near-full steps


def test_eps_is_base_plus_ratio_times_a_typical_latents_rms_gradient_and_only_on_the_encoder():
    sae = build_sae(sae_cfg("topk"))
    opt = make_optimizer(sae, lr=1e-3, betas=(0.9, 0.99), eps=1e-8, encoder_eps_ratio=0.5)
    groups = {n: grp for grp in opt.param_groups for n, p in sae.named_parameters() if p is grp["params"][0]}
    assert set(groups) >= {"W_enc", "b_enc"} and groups["W_enc"] is not groups["b_enc"]
    assert all(not grp.get("eps_ratio") for n, grp in groups.items() if n not in ("W_enc", "b_enc"))
    for step in range(3):
        for p in sae.parameters():
            p.grad = torch.randn_like(p) * (step + 1)  # randn_like keeps the parameter's layout
        sae.W_enc.grad[:, 0] *= 100  # one dense latent: the mean over latents would follow it, the median does not
        sae.b_enc.grad[0] *= 100
        opt.step()
    refresh_relative_eps(opt)  # what the next step does first
    for name, per_latent in (("W_enc", lambda v: v.mean(0)), ("b_enc", lambda v: v)):
        state = opt.state[getattr(sae, name)]
        v_hat = per_latent(state["exp_avg_sq"] / (1 - 0.99 ** float(state["step"])))
        assert groups[name]["eps"] == pytest.approx(1e-8 + 0.5 * float(v_hat.median()) ** 0.5, rel=1e-6)
        assert groups[name]["eps"] < 0.5 * (0.5 * float(v_hat.mean()) ** 0.5)
    rest = opt.param_groups[-1]
    assert rest["eps"] == 1e-8 and {id(sae.W_dec), id(sae.b_dec)} <= {id(p) for p in rest["params"]}


def test_matching_pursuit_has_no_encoder_and_one_group():
    sae = build_sae(sae_cfg("matching_pursuit"))
    opt = make_optimizer(sae, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, encoder_eps_ratio=1.0)
    assert len(opt.param_groups) == 1 and not opt.param_groups[0].get("eps_ratio")


def test_resume_with_relative_eps_is_exact(tmp_path):
    from test_training_resume import SimulatedKill, assert_same_state, kill_at

    cfgs = [sae_cfg("topk", name="a"), sae_cfg("mutual_choice", name="b")]
    cfg = train_cfg(encoder_eps_ratio=1.0)
    straight = train_sweep(cfgs, planted_source(), cfg, tmp_path / "A")
    with pytest.raises(SimulatedKill):
        train_sweep(cfgs, planted_source(), cfg, tmp_path / "B", callbacks=[kill_at(12 * BATCH)])
    resumed = train_sweep(cfgs, planted_source(), cfg, tmp_path / "B", resume="must")
    assert_same_state(straight.saes, resumed.saes)
    plain = train_sweep(cfgs, planted_source(), train_cfg(), tmp_path / "C")
    assert not torch.allclose(plain.saes["a"].W_enc, straight.saes["a"].W_enc)  # the option is in effect
