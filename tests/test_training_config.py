"""TrainConfig validation names fields and allowed values; the schedule; the config hash."""

from __future__ import annotations

import pytest
import torch

from sae_lab.configbase import ConfigError, build_config, load_config
from sae_lab.training import TrainConfig
from sae_lab.training.config import AUTO_LR_AT_REF, AUTO_LR_REF_LATENTS, auto_lr
from sae_lab.training.resume import resolved_hash
from sae_lab.training.schedule import WarmupDecay, make_scheduler


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as err:
        build_config(TrainConfig, data, "train")
    return str(err.value)


def test_unknown_key_is_named_with_a_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(TrainConfig, overrides=["total_token=1000"])
    assert "unknown key 'total_token'" in str(err.value) and "Did you mean 'total_tokens'" in str(err.value)


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"decay": "exponential"}, ["decay", "'cosine', 'linear' or 'none'"]),
        ({"b_dec_init": "median"}, ["b_dec_init", "'geometric_median', 'mean' or 'zeros'"]),
        ({"dtype": "float16"}, ["dtype", "'float32' or 'bfloat16'"]),
        ({"device": "gpu"}, ["device", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"]),
        ({"lr": -1}, ["lr", "greater than 0"]),
        ({"lr": "fast"}, ["lr", "'auto'"]),
        ({"betas": [0.9, 1.5]}, ["betas", "[0, 1)"]),
        ({"batch_size": 4096, "total_tokens": 100}, ["total_tokens (100)", "batch_size (4096)"]),
        ({"decay_start": 1.5}, ["decay_start", "less than or equal to 1"]),
        ({"encoder_eps_ratio": -0.5}, ["encoder_eps_ratio", "greater than or equal to 0"]),
        ({"wandb": {"projekt": "x"}}, ["wandb.projekt", "Did you mean 'project'"]),
    ],
)
def test_validation_errors_name_the_field_and_allowed_values(data, expected):
    msg = error_of(data)
    for part in expected:
        assert part in msg, (part, msg)


def test_derived_steps_and_device():
    cfg = TrainConfig(batch_size=100, total_tokens=1050, warmup_tokens=200)
    assert cfg.total_steps == 10 and cfg.warmup_steps == 2
    assert TrainConfig(batch_size=100, total_tokens=1000, warmup_fraction=0.3).warmup_steps == 3
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert TrainConfig().resolved_device().type == expected
    assert TrainConfig(device="cpu").resolved_device() == torch.device("cpu")


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_schedule_warms_up_holds_and_decays_to_lr_end(decay):
    f = WarmupDecay(total_steps=100, warmup_steps=10, decay=decay, decay_start=0.5, lr_end=0.1)
    warm = [f(s) for s in range(10)]
    assert warm == sorted(warm) and warm[0] < 0.2 and warm[-1] < 1
    assert all(f(s) == 1.0 for s in range(10, 51))
    assert f(99) == pytest.approx(0.1)
    assert 0.1 < f(75) < 1.0 and f(60) > f(80)
    if decay == "cosine":
        assert f(74.5) == pytest.approx(0.55)  # halfway through the decay span (50..99)
    assert WarmupDecay(100, 0, "none", 0.5, 0.0)(99) == 1.0


def test_scheduler_drives_the_optimizer_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    cfg = TrainConfig(
        batch_size=10, total_tokens=100, lr=1.0, warmup_tokens=0, decay="linear", decay_start=0.0, lr_end=0.0
    )
    sched = make_scheduler(opt, cfg)
    lrs = []
    for _ in range(cfg.total_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[-1] == pytest.approx(0.0) and lrs == sorted(lrs, reverse=True)


def test_config_hash_covers_training_fields_only():
    def resolved(**kw):
        return {"train": TrainConfig(**kw).model_dump(mode="json"), "saes": [{"k": 4}], "source": {"n": 1}}

    base = resolved_hash(resolved())
    assert (
        resolved_hash(resolved(log_every_steps=7, progress=False, checkpoint_every_tokens=4096, device="cpu")) == base
    )
    assert resolved_hash(resolved(lr=1e-3)) != base
    assert resolved_hash(resolved(seed=1)) != base
    other_source = resolved()
    other_source["source"] = {"n": 2}
    assert resolved_hash(other_source) != base


def test_lr_auto_is_the_default_and_scales_as_one_over_sqrt_width():
    cfg = TrainConfig()
    assert cfg.lr == "auto"
    assert cfg.lr_for(AUTO_LR_REF_LATENTS) == pytest.approx(AUTO_LR_AT_REF)
    for d_sae in (576, 2304, 4608, 9216, 65536):
        assert cfg.lr_for(d_sae) == auto_lr(d_sae)
        assert auto_lr(4 * d_sae) == pytest.approx(auto_lr(d_sae) / 2)  # 1/sqrt(d_sae), sparsify's rule
    assert auto_lr(2304) > auto_lr(9216)
    assert TrainConfig(lr=3e-4).lr_for(2304) == TrainConfig(lr=3e-4).lr_for(9216) == 3e-4
    # each architecture scales the rule by its own constant (TopK 2, measured in BENCHMARKS.md §13)
    assert cfg.lr_for(2304, "topk") == pytest.approx(2 * cfg.lr_for(2304, "mutual_choice"))
    assert cfg.lr_for(2304, "mutual_choice") == pytest.approx(auto_lr(2304))
    assert TrainConfig(lr=3e-4).lr_for(2304, "topk") == 3e-4
    assert cfg.encoder_eps_ratio == "auto" and cfg.encoder_eps_ratio_for("topk") == 2.0
    assert cfg.encoder_eps_ratio_for("feature_choice") == 1.0 and cfg.encoder_eps_ratio_for("mutual_choice") == 0.0
    assert TrainConfig(encoder_eps_ratio=0.0).encoder_eps_ratio_for("topk") == 0.0
    assert load_config(TrainConfig, overrides=["lr=auto"]).lr == "auto"
    assert load_config(TrainConfig, overrides=["lr=0.0008"]).lr == pytest.approx(8e-4)
    with pytest.raises(ValueError, match="d_sae must be positive"):
        auto_lr(0)
