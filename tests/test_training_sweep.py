"""Sweeps share one stream; training reduces the loss; the run directory holds what it promises."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from _train_helpers import BATCH, architectures, planted_source, sae_cfg, train_cfg
from sae_lab.rundir import RunDir
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig
from sae_lab.training import train_sweep
from sae_lab.training.state import build_saes


class CountingSource:
    """Wraps a source and records every batch it yields."""

    def __init__(self, inner):
        self.inner, self.yielded, self.iterators = inner, 0, 0
        self.hook_name, self.d_in, self.norm_scale = inner.hook_name, inner.d_in, inner.norm_scale

    def iter_batches(self, batch_size, seed=0, skip_batches=0, device="cpu"):
        self.iterators += 1
        for x in self.inner.iter_batches(batch_size, seed, skip_batches, device):
            self.yielded += 1
            yield x

    def describe(self):
        return self.inner.describe()


def test_identical_configs_in_one_sweep_end_identical(tmp_path):
    result = train_sweep(
        [sae_cfg(name="twin_a"), sae_cfg(name="twin_b")], planted_source(), train_cfg(), tmp_path / "r"
    )
    a, b = result.saes["twin_a"].state_dict(), result.saes["twin_b"].state_dict()
    init = build_saes([sae_cfg(name="twin_a")], seed=0)[0].state_dict()
    assert not torch.allclose(a["W_enc"], init["W_enc"]), "the twins trained"
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_each_batch_is_drawn_once_for_the_whole_sweep(tmp_path):
    source = CountingSource(planted_source())
    cfgs = [sae_cfg(a, name=f"{a}_x") for a in architectures()] + [sae_cfg("topk", name="topk_k2", k=2)]
    train_sweep(cfgs, source, train_cfg(lr=1e-2), tmp_path / "r")  # every architecture below FVU 1 in 20 steps
    sample_batches = 256 // BATCH  # b_dec_init_tokens from the start of the stream
    calibration_batches = 256 // BATCH  # calibrate_tokens after the last step (the sweep has choice SAEs)
    assert source.iterators == 2
    assert source.yielded == 20 + sample_batches + calibration_batches


@pytest.mark.parametrize("arch", architectures())
def test_loss_decreases_on_a_planted_problem(tmp_path, arch):
    result = train_sweep([sae_cfg(arch)], planted_source(), train_cfg(total_tokens=40 * BATCH), tmp_path / "r")
    records = RunDir(tmp_path / "r").metrics()
    first, last = records[0], records[-1]
    assert last["fvu"] < 0.75 * first["fvu"], (first["fvu"], last["fvu"])
    assert last["loss"] < first["loss"]
    (only,) = result.results.values()
    assert only.metrics["fvu"] == last["fvu"]


def test_metrics_log_has_one_line_per_logged_step_per_sae(tmp_path):
    cfgs = [sae_cfg(name="one"), sae_cfg(name="two", k=2)]
    train_sweep(cfgs, planted_source(), train_cfg(), tmp_path / "r")
    records = RunDir(tmp_path / "r").metrics()
    assert len(records) == 2 * 10  # 20 steps logged every 2, two SAEs
    for r in records:
        expected = {
            "sae",
            "step",
            "tokens",
            "lr",
            "loss",
            "mse",
            "fvu",
            "l0",
            "grad_norm",
            "dead_frac",
            "rare_frac",
            "underused_frac",
        }
        assert expected | {"tokens_per_s"} <= set(r)
        assert r["tokens"] == r["step"] * BATCH
        assert 0 <= r["dead_frac"] <= 1 and r["tokens_per_s"] > 0
    assert [r["l0"] for r in records if r["sae"] == "two"] == [2.0] * 10
    assert any("auxk" in r for r in records), "TopK's aux loss is logged"
    lrs = [r["lr"] for r in records if r["sae"] == "one"]
    base = train_cfg().lr
    assert lrs[0] < base and max(lrs) == pytest.approx(base) and lrs[-1] < base / 5  # warm-up, then decay


def test_run_dir_layout_and_saved_saes_apply_to_raw_activations(tmp_path):
    scale = 2.5
    source = planted_source(norm_scale=scale)
    result = train_sweep([sae_cfg()], source, train_cfg(), tmp_path / "r")
    run = tmp_path / "r"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "run.json", "metrics.jsonl", "checkpoints", "saes"}
    status = json.loads((run / "run.json").read_text())
    assert status["status"] == "done" and status["tokens_seen"] == 20 * BATCH
    assert status["results"]["topk_k4"]["n_dead"] == len(result.results["topk_k4"].dead_latents)
    saved = SAEDir(run / "saes" / "topk_k4").load()
    trained = result.saes["topk_k4"].eval()
    raw = source.data[:32]
    with torch.no_grad():
        assert torch.allclose(saved(raw), trained(raw * scale) / scale, atol=1e-4)


def test_dead_latents_are_reported(tmp_path):
    # a huge dictionary on 2 planted directions with k=1: most latents never fire within 4 batches
    data = torch.randn(2, 16)[torch.randint(0, 2, (1024,))] + 0.01 * torch.randn(1024, 16)
    from sae_lab.activations.source import TensorSource

    result = train_sweep(
        [sae_cfg(k=1, aux_coef=0.0)], TensorSource(data, hook_name="tensor"), train_cfg(), tmp_path / "r"
    )
    dead = result.results["topk_k1"].dead_latents
    assert len(dead) > 32
    assert dead == torch.nonzero(result.saes["topk_k1"].dead_mask()).flatten().tolist()
    assert result.results["topk_k1"].metrics["dead_frac"] == pytest.approx(len(dead) / 64)
    under = result.results["topk_k1"].underused_latents
    assert len(under) > 32 and result.results["topk_k1"].metrics["underused_frac"] == pytest.approx(len(under) / 64)
    status = json.loads((tmp_path / "r" / "run.json").read_text())["results"]["topk_k1"]
    assert (status["n_dead"], status["n_underused"]) == (len(dead), len(under))


def test_progress_bar_summarises_the_sweep_on_one_line(tmp_path, capsys):
    cfgs = [sae_cfg(name="k4"), sae_cfg(name="k1", k=1)]
    train_sweep(cfgs, planted_source(), train_cfg(progress=True), tmp_path / "r")
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "tok/s" in last and "1.28k/1.28k" in last
    assert "L0=1.0..4.0" in last  # the two SAEs' L0 as a range
    for part in ("loss=", "fvu=", "dead="):
        assert part in last, last


def test_a_torn_metrics_line_from_a_kill_is_dropped_on_resume(tmp_path):
    run = tmp_path / "r"
    train_sweep([sae_cfg()], planted_source(), train_cfg(), run, stop_after_tokens=10 * BATCH)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"sae": "topk_k4", "step": 11, "tok')  # killed mid-write
    train_sweep([sae_cfg()], planted_source(), train_cfg(), run)
    records = RunDir(run).metrics()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 10
    assert [r["step"] for r in records] == list(range(2, 21, 2))


def test_lr_auto_resolves_per_sae_width_and_is_recorded(tmp_path):
    from sae_lab.training.config import auto_lr

    saes = [sae_cfg(name="narrow", d_sae=32), sae_cfg(name="wide", d_sae=128)]
    result = train_sweep(
        saes, planted_source(), train_cfg(lr="auto", warmup_fraction=0.0, decay="none"), tmp_path / "r"
    )
    status = json.loads((tmp_path / "r" / "run.json").read_text())["results"]
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    for name, d_sae in (("narrow", 32), ("wide", 128)):
        assert status[name]["base_lr"] == pytest.approx(auto_lr(d_sae, "topk"))
        logged = [r["lr"] for r in records if r.get("sae") == name]
        assert logged and logged == pytest.approx([auto_lr(d_sae, "topk")] * len(logged))  # constant schedule
    assert result.results["narrow"].metrics["lr"] > result.results["wide"].metrics["lr"]


def test_dead_window_auto_is_a_tenth_of_the_run_so_auxk_runs_in_short_runs(tmp_path):
    """The old fixed window (1M tokens) was longer than a short run: no latent ever counted as dead, AuxK never
    ran. ``dead_tokens: auto`` resolves to a tenth of the run, recorded in config.yaml, and AuxK then runs."""
    cfg = sae_cfg(name="t")
    data = cfg.model_dump()
    data.pop("dead_tokens")
    auto = SAEConfig(**data)
    assert auto.dead_tokens == "auto"
    result = train_sweep([auto], planted_source(), train_cfg(total_tokens=60 * BATCH), tmp_path / "r")
    assert result.saes["t"].cfg.dead_tokens == 6 * BATCH  # a tenth of 60 batches
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["saes"][0]
    assert saved["dead_tokens"] == 6 * BATCH
    assert any("auxk" in r for r in RunDir(tmp_path / "r").metrics())
