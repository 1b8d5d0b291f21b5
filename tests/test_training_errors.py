"""NaN/inf stops the run and keeps the last good checkpoint; bad input fails before training starts."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from _train_helpers import BATCH, architectures, planted_source, sae_cfg, train_cfg
from sae_lab.configbase import ConfigError
from sae_lab.training import NonFiniteError, train_sweep
from sae_lab.training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint


class PoisonedSource:
    """Wraps a source; the batch at stream position ``bad_batch`` is all NaN."""

    def __init__(self, inner, bad_batch: int):
        self.inner, self.bad_batch = inner, bad_batch
        self.hook_name, self.d_in, self.norm_scale = inner.hook_name, inner.d_in, inner.norm_scale

    def iter_batches(self, batch_size, seed=0, skip_batches=0, device="cpu"):
        batches = self.inner.iter_batches(batch_size, seed, skip_batches, device)
        for i, x in enumerate(batches, start=skip_batches):
            yield torch.full_like(x, float("nan")) if i == self.bad_batch else x

    def describe(self):
        return self.inner.describe()


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path):
    run = tmp_path / "run"
    source = PoisonedSource(planted_source(), bad_batch=12)  # step 13; checkpoints at steps 5 and 10
    with pytest.raises(NonFiniteError) as err:
        train_sweep([sae_cfg(name="good_one")], source, train_cfg(), run)
    msg = str(err.value)
    assert "SAE 'good_one'" in msg and "step 13" in msg and "ckpt_00000000000640.pt" in msg
    ckpts = list_checkpoints(run / "checkpoints")
    assert ckpts[0].name == "ckpt_00000000000640.pt"
    state = load_checkpoint(ckpts[0])
    assert state["tokens_seen"] == 10 * BATCH
    assert all(torch.isfinite(t).all() for t in state["saes"]["good_one"]["model"].values() if t.is_floating_point())
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "good_one" in status["error"]
    assert not (run / "saes").exists()


def poison_on_call(n: int, poison):
    """A grad_hook (the DDP all-reduce point) that applies ``poison(sae)`` on its n-th call."""
    calls = {"n": 0}

    def hook(sae):
        calls["n"] += 1
        if calls["n"] == n:
            poison(sae)

    return hook


def test_non_finite_gradients_stop_before_the_step(tmp_path):
    hook = poison_on_call(8, lambda sae: sae.b_dec.grad.fill_(float("inf")))
    with pytest.raises(
        NonFiniteError, match=r"SAE 'topk_k4'.*step 8: the gradient norm is inf.*ckpt_00000000000320\.pt"
    ):
        train_sweep([sae_cfg()], planted_source(), train_cfg(grad_clip=None), tmp_path / "run", grad_hook=hook)
    assert list_checkpoints(tmp_path / "run" / "checkpoints")[0].name == "ckpt_00000000000320.pt"


def test_non_finite_parameters_are_caught_before_the_next_log_or_checkpoint(tmp_path):
    hook = poison_on_call(10, lambda sae: sae.b_enc.data.__setitem__(0, float("nan")))  # finite grads, NaN weight
    with pytest.raises(NonFiniteError, match=r"SAE 'topk_k4'.*step 10: parameter b_enc holds NaN/inf.*00000320\.pt"):
        train_sweep([sae_cfg()], planted_source(), train_cfg(log_every_steps=5), tmp_path / "run", grad_hook=hook)
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in ckpts] == ["ckpt_00000000000320.pt"]  # step 10's checkpoint was not written


def test_a_checkpoint_holding_nan_is_never_written(tmp_path):
    state = {"tokens_seen": 5, "saes": {"x": {"model": {"w": torch.tensor([1.0, float("nan")])}}}}
    with pytest.raises(CheckpointError, match="non-finite"):
        save_checkpoint(tmp_path, state)
    assert list(tmp_path.iterdir()) == []


def test_d_in_mismatch_names_both_values(tmp_path):
    with pytest.raises(ConfigError, match=r"d_in=32 but the activation source has d_in=16"):
        train_sweep([sae_cfg(d_in=32)], planted_source(), train_cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_hook_mismatch_names_both_hooks(tmp_path):
    with pytest.raises(ConfigError, match=r"hook_name='blocks.3.hook_resid_post'.*'tensor'"):
        train_sweep([sae_cfg(hook_name="blocks.3.hook_resid_post")], planted_source(), train_cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_k_larger_than_the_dictionary_is_refused(tmp_path):
    bad = {"architecture": "topk", "d_in": 16, "d_sae": 64, "k": 100, "hook_name": "tensor"}
    with pytest.raises(ConfigError, match=r"k=100 exceeds d_sae=64"):
        train_sweep([bad], planted_source(), train_cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif("feature_choice" not in architectures(), reason="feature_choice not registered yet")
def test_infeasible_capacity_is_refused_before_training(tmp_path):
    # min_capacity 5 * d_sae 64 = 320 slots needed, but k*batch_size = 4*64 = 256
    with pytest.raises(ConfigError, match=r"batch_size=64.*min_capacity=5"):
        train_sweep([sae_cfg("feature_choice", min_capacity=5)], planted_source(), train_cfg(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_duplicate_names_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="repeated: same"):
        train_sweep([sae_cfg(name="same"), sae_cfg(name="same", k=2)], planted_source(), train_cfg(), tmp_path / "r")


def test_missing_optional_logger_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(ConfigError, match=r"train.tensorboard.*pip install tensorboard"):
        train_sweep([sae_cfg()], planted_source(), train_cfg(tensorboard=True), tmp_path / "run")
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ConfigError, match=r"train.wandb.*pip install wandb"):
        train_sweep([sae_cfg()], planted_source(), train_cfg(wandb={"project": "p"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()
