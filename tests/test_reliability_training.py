"""Divergence is a failure, never "done"; a failed run never stays "running" in run.json."""

from __future__ import annotations

import json

import pytest

from _train_helpers import planted_source, sae_cfg, train_cfg
from sae_lab.training import train_sweep
from sae_lab.training.divergence import DivergedError, DivergenceGuard


def test_huge_lr_ends_as_diverged_not_done(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(DivergedError, match=r"diverged.*'boom'.*Lower train.lr"):
        train_sweep([sae_cfg(name="boom")], planted_source(), train_cfg(lr=1000.0, grad_clip=None), run)
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "diverged" and "boom" in status["error"]
    assert not (run / "saes" / "boom").exists()  # the diverged weights are not published


def test_a_healthy_run_is_not_flagged(tmp_path):
    result = train_sweep([sae_cfg(name="fine")], planted_source(), train_cfg(), tmp_path / "run")
    assert result.status == "done"


def test_guard_rules():
    g = DivergenceGuard()
    assert not any(g.update("a", v) for v in (0.9, 50.0, 60.0))  # two strikes only
    assert g.update("a", 70.0)  # the third window in a row above 10 x the starting FVU of 1
    g = DivergenceGuard()
    assert not any(g.update("n", v) for v in (1e16, 2e16))
    assert g.update("n", 1.3e16)  # blown up from the first window on: judged against 1, not against itself
    for history, failed in (((0.8, 1.2), True), ((1.5, 1.2), True), ((0.5, 0.3), False), ((0.5, float("nan")), True)):
        g = DivergenceGuard()
        for v in history:
            g.update("b", v)
        assert g.failed_at_end("b") == failed, history  # final FVU above 1 (or not finite) fails, whatever the start


@pytest.mark.embedded
def test_lr_1000_on_the_embedded_model_ends_as_diverged(tmp_path, embedded_cache):
    """The review's case: TopK at train.lr=1000, batch 512, 32 steps on a small embedded-model cache ended with
    FVU 1.3e16, status "done" and exit code 0, because the first logged window had already blown up."""
    from sae_lab.activations.cache_reader import ActivationCache
    from sae_lab.saes import SAEConfig
    from sae_lab.training import TrainConfig

    source = ActivationCache(embedded_cache).source()
    sae = SAEConfig(architecture="topk", d_in=source.d_in, d_sae=1152, k=32, name="topk", hook_name=source.hook_name)
    cfg = TrainConfig(batch_size=512, total_tokens=32 * 512, lr=1000.0, log_every_steps=8, progress=False)
    run = tmp_path / "run"
    with pytest.raises(DivergedError, match="'topk'"):
        train_sweep([sae], source, cfg, run)
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "diverged" and not (run / "saes" / "topk").exists()


def test_failure_mid_run_is_recorded_in_run_json(tmp_path):
    run = tmp_path / "run"

    def boom(info):
        if info.step == 7:
            raise OSError(27, "File too large")

    with pytest.raises(OSError):
        train_sweep([sae_cfg(name="x")], planted_source(), train_cfg(), run, callbacks=[boom])
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "failed" and "File too large" in status["error"]
    result = train_sweep([sae_cfg(name="x")], planted_source(), train_cfg(), run)  # the same command recovers
    assert result.status == "done"
