"""sae_lab.rundir: the one owner of the run-directory layout, read back from a real (tiny) training run."""

from __future__ import annotations

import json

import pytest
import torch

import sae_lab
from _train_helpers import BATCH, planted_source, sae_cfg, train_cfg
from sae_lab.rundir import RunDir, RunDirError
from sae_lab.saedir import SAEDir
from sae_lab.saeref import resolve_one
from sae_lab.training import train_sweep


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("rundir") / "run"
    cfg = train_cfg(total_tokens=6 * BATCH, checkpoint_every_tokens=3 * BATCH, log_every_steps=2)
    result = train_sweep([sae_cfg(name="a"), sae_cfg(name="b", k=2)], planted_source(), cfg, root)
    return root, result


def test_a_trained_run_reads_back_through_rundir(trained):
    root, result = trained
    run = RunDir(root)
    assert run.is_run() and not RunDir(root / "saes").is_run()
    assert run.read_config()["saes"][1]["k"] == 2
    status = run.read_status()
    assert status["status"] == "done" and status["tokens_seen"] == result.tokens_seen == 6 * BATCH
    assert run.sae_names() == ["a", "b"] and run.sae_dir("a") == result.results["a"].sae_dir
    assert [r["tokens"] for r in run.metrics("b")] == [2 * BATCH, 4 * BATCH, 6 * BATCH]
    assert len(run.metrics()) == 6 and {r["sae"] for r in run.metrics()} == {"a", "b"}
    assert run.metrics("b")[-1] == result.results["b"].metrics
    assert sorted(p.name for p in run.checkpoints_dir.glob("ckpt_*.pt"))[-1] == status["last_checkpoint"]
    assert run.eval_summary() is None and SAEDir(run.sae_dir("a")).read_eval() is None
    assert SAEDir(run.sae_dir("a")).feature_db_path == root / "saes" / "a" / "features.sqlite"


def test_eval_files_round_trip(tmp_path):
    run = RunDir(tmp_path)
    run.sae_dir("x").mkdir(parents=True)
    run.write_eval_summary({"saes": {"x": {"fvu": 0.5}}})
    SAEDir(run.sae_dir("x")).write_eval({"metrics": {"fvu": 0.5}})
    assert run.eval_summary()["saes"]["x"]["fvu"] == 0.5
    assert SAEDir(run.sae_dir("x")).read_eval() == {"metrics": {"fvu": 0.5}}
    assert json.loads(run.eval_path.read_text()) == run.eval_summary()
    assert not list(tmp_path.rglob(".*tmp*"))  # no temp files left behind


def test_a_torn_last_metrics_line_is_skipped(tmp_path):
    run = RunDir(tmp_path)
    run.metrics_path.write_text(json.dumps({"sae": "a", "tokens": 1}) + "\n" + '{"sae": "a", "tok')
    assert run.metrics() == [{"sae": "a", "tokens": 1}] and run.metrics("b") == []


def test_missing_or_corrupt_files_name_the_path(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(RunDirError, match=f"'{tmp_path}' is not a run directory.*config.yaml"):
        run.read_config()
    assert run.read_status() == {} and run.sae_names() == [] and run.metrics() == []
    run.config_path.write_text("train: [unclosed\n")
    with pytest.raises(RunDirError, match="config.yaml' is not valid YAML"):
        run.read_config()
    run.status_path.write_text("{not json")
    with pytest.raises(RunDirError, match="run.json' is not valid JSON"):
        run.read_status()


def test_write_status_merges_fields(tmp_path):
    run = RunDir(tmp_path)
    run.write_status(status="running", steps=1)
    run.write_status(steps=2)
    assert run.read_status() == {"status": "running", "steps": 2}


def test_load_sae_resolves_a_run_dir_one_floor_up(trained, tmp_path):
    root, result = trained
    with pytest.raises(RunDirError, match=r"holds SAEs \['a', 'b'\]; pass .*saes/<name>"):
        sae_lab.load_sae(root)
    single = RunDir(tmp_path / "one")
    SAEDir(single.sae_dir("a")).save(result.saes["a"])
    single.write_config({"saes": []})
    assert resolve_one(single.path).sae_dir == single.sae_dir("a")
    x = torch.randn(5, 16)
    assert torch.equal(sae_lab.load_sae(single.path).encode(x), sae_lab.load_sae(single.sae_dir("a")).encode(x))
