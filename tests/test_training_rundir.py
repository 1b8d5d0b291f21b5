"""The run directory is never clobbered silently: resume, refuse, or overwrite only when asked."""

from __future__ import annotations

import pytest
import yaml

from _train_helpers import BATCH, planted_source, sae_cfg, train_cfg
from sae_lab.saes import SAEConfig
from sae_lab.training import RunDirError, TrainConfig, train_sweep


def short(**kw):
    return train_cfg(total_tokens=4 * BATCH, checkpoint_every_tokens=2 * BATCH, **kw)


def test_mismatching_config_is_refused_and_untouched(tmp_path):
    run = tmp_path / "run"
    train_sweep([sae_cfg()], planted_source(), short(), run)
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(RunDirError) as err:
        train_sweep([sae_cfg()], planted_source(), short(lr=1e-3), run)
    msg = str(err.value)
    assert f"train.lr: {short().lr} -> 0.001" in msg
    assert "new run_dir" in msg and "overwrite" in msg
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before


def test_a_different_sae_config_is_refused(tmp_path):
    run = tmp_path / "run"
    train_sweep([sae_cfg()], planted_source(), short(), run)
    with pytest.raises(RunDirError, match=r"saes\.0\.k: 4 -> 2"):
        train_sweep([sae_cfg(k=2, name="topk_k4")], planted_source(), short(), run)


def test_non_training_fields_do_not_block_resume(tmp_path):
    run = tmp_path / "run"
    train_sweep([sae_cfg()], planted_source(), short(), run, stop_after_tokens=2 * BATCH)
    result = train_sweep([sae_cfg()], planted_source(), short(log_every_steps=1, keep_checkpoints=3), run)
    assert result.status == "done" and result.tokens_seen == 4 * BATCH
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["log_every_steps"] == 1


def test_never_refuses_without_overwrite_and_restarts_with_it(tmp_path):
    run = tmp_path / "run"
    train_sweep([sae_cfg()], planted_source(), short(), run)
    with pytest.raises(RunDirError, match="overwrite"):
        train_sweep([sae_cfg()], planted_source(), short(lr=1e-3), run, resume="never")
    (run / "eval.json").write_text("{}")  # sae-lab's own file from the old run: removed by overwrite
    result = train_sweep([sae_cfg()], planted_source(), short(lr=1e-3), run, resume="never", overwrite=True)
    assert result.status == "done" and not (run / "eval.json").exists()
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["lr"] == 1e-3


def test_must_refuses_when_there_is_nothing_to_resume(tmp_path):
    with pytest.raises(RunDirError, match="no run to resume"):
        train_sweep([sae_cfg()], planted_source(), short(), tmp_path / "run", resume="must")


def test_a_foreign_non_empty_directory_is_refused_even_with_overwrite(tmp_path):
    (tmp_path / "precious.txt").write_text("not an sae-lab run")
    with pytest.raises(RunDirError, match="not a sae-lab run directory"):
        train_sweep([sae_cfg()], planted_source(), short(), tmp_path, resume="never", overwrite=True)
    assert (tmp_path / "precious.txt").exists()


def test_unwritable_run_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="not writable"):
        train_sweep([sae_cfg()], planted_source(), short(), blocker / "run")


def test_lr_auto_resolved_value_is_in_the_config_hash(tmp_path, monkeypatch):
    """Under lr: auto the resolved lr is recorded and hashed: a changed auto rule refuses to resume an old run."""
    import sae_lab.training.config as train_config

    run = tmp_path / "run"
    train_sweep([sae_cfg(name="a")], planted_source(), short(lr="auto"), run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())["base_lr"]
    assert recorded == {"a": pytest.approx(train_config.auto_lr(sae_cfg().d_sae, "topk"))}
    monkeypatch.setattr(train_config, "AUTO_LR_AT_REF", 2 * train_config.AUTO_LR_AT_REF)
    with pytest.raises(RunDirError, match="base_lr.a"):
        train_sweep([sae_cfg(name="a")], planted_source(), short(lr="auto"), run, resume="must")


def test_encoder_eps_ratio_auto_resolved_value_is_in_the_config_hash(tmp_path, monkeypatch):
    """Under encoder_eps_ratio: auto each SAE's ratio is recorded and hashed, like lr: auto's base_lr."""
    from sae_lab.saes.topk import TopKSAE

    run = tmp_path / "run"
    train_sweep([sae_cfg(name="a"), sae_cfg("matching_pursuit", name="b")], planted_source(), short(), run)
    recorded = yaml.safe_load((run / "config.yaml").read_text())["encoder_eps_ratio"]
    assert recorded == {"a": TopKSAE.auto_encoder_eps_ratio, "b": 0.0}
    monkeypatch.setattr(TopKSAE, "auto_encoder_eps_ratio", 0.5)
    with pytest.raises(RunDirError, match="encoder_eps_ratio.a"):
        train_sweep(
            [sae_cfg(name="a"), sae_cfg("matching_pursuit", name="b")], planted_source(), short(), run, resume="must"
        )


def test_resolved_config_round_trips(tmp_path):
    run = tmp_path / "run"
    cfg = short(decay="cosine", wandb=None, betas=(0.8, 0.99))
    saes = [sae_cfg(name="first"), sae_cfg(name="second", k=2)]
    train_sweep(saes, planted_source(), cfg, run, extra_config={"data": {"cache": "caches/x"}})
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert TrainConfig.model_validate(resolved["train"]) == cfg
    assert [SAEConfig.model_validate(s) for s in resolved["saes"]] == saes
    assert resolved["source"] == planted_source().describe()
    assert resolved["data"] == {"cache": "caches/x"}
