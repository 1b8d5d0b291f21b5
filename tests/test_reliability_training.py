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
    assert g.update("a", 70.0)  # the third window in a row above 10 x max(1, first)
    g = DivergenceGuard()
    g.update("b", 0.8)
    g.update("b", 1.2)
    assert g.failed_at_end("b")  # worse than the mean and than the start
    g = DivergenceGuard()
    g.update("c", 1.5)
    g.update("c", 1.2)
    assert not g.failed_at_end("c")  # above 1 but improving: not divergence


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
