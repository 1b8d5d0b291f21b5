"""End to end on the real embedded model: `sae-lab train` on cached layer-15 residuals, all four architectures."""

import json

import numpy as np
import pytest
import torch

import sae_lab
from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.cli import main as cli_main

pytestmark = pytest.mark.embedded
HOOK = "blocks.15.hook_resid_post"
ARCHS = ["topk", "mutual_choice", "feature_choice", "matching_pursuit"]


def raw_rows(cache_dir, shard=0):
    cache = ActivationCache(cache_dir)
    acts, keep = cache.acts(shard, HOOK), torch.from_numpy(np.array(cache.keep(shard, HOOK)))
    return acts[keep]


def test_train_sweep_on_cached_embedded_activations(embedded_cache, tmp_path, capsys):
    run = tmp_path / "run"
    saes = "[" + ",".join(f"{{architecture: {a}, d_sae: 1152, k: 16, name: {a}}}" for a in ARCHS) + "]"
    args = [
        "train",
        f"run_dir={run}",
        f"cache.path={embedded_cache}",
        f"saes={saes}",
        "train.total_tokens=40960",
        "train.batch_size=512",
        "train.lr=0.001",
        "train.log_every_steps=5",
        "train.checkpoint_every_tokens=20480",
        "train.progress=false",
    ]
    assert cli_main(args) == 0
    assert "topk" in capsys.readouterr().out
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    x = raw_rows(embedded_cache)
    baseline = ((x - x.mean(0)) ** 2).sum()
    for arch in ARCHS:
        fvus = [r["fvu"] for r in records if r["sae"] == arch]
        assert fvus[-1] < 0.7 * fvus[0], arch
        sae = sae_lab.load_sae(run / "saes" / arch)
        with torch.no_grad():
            fvu = ((sae(x) - x) ** 2).sum() / baseline  # the saved SAE works on RAW activations
            l0 = (sae.encode(x) != 0).sum(-1).float().mean()
        assert fvu < 0.6, (arch, float(fvu))
        assert 4 <= l0 <= 40, (arch, float(l0))
    # a second identical command resumes the finished run instead of overwriting it
    assert cli_main(args) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(records)


def test_default_lr_is_width_aware_on_embedded_activations(embedded_cache, tmp_path):
    from sae_lab.training.config import auto_lr

    run = tmp_path / "run"
    saes = (
        "[{architecture: topk, d_sae: 576, k: 16, name: narrow}, {architecture: topk, d_sae: 2304, k: 16, name: wide}]"
    )
    args = [
        "train",
        f"run_dir={run}",
        f"cache.path={embedded_cache}",
        f"saes={saes}",
        "train.total_tokens=10240",
        "train.batch_size=512",
        "train.log_every_steps=5",
        "train.progress=false",
    ]  # train.lr left at auto
    assert cli_main(args) == 0
    results = json.loads((run / "run.json").read_text())["results"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for name, d_sae in (("narrow", 576), ("wide", 2304)):
        assert results[name]["base_lr"] == pytest.approx(auto_lr(d_sae, "topk"))
        fvus = [r["fvu"] for r in records if r["sae"] == name]
        assert fvus[-1] < 0.8 * fvus[0], (name, fvus)
    assert results["narrow"]["base_lr"] == pytest.approx(2 * results["wide"]["base_lr"])


def test_relative_encoder_eps_keeps_topk_latents_alive_at_a_high_lr(embedded_cache, tmp_path):
    """The mechanism of BENCHMARKS.md §13 on real activations: at a high lr, plain Adam lets a share of TopK's
    latents die within a short run; the relative encoder eps (TopK's default) keeps nearly all of them firing."""
    dead = {}
    for ratio in (0.0, 2.0):
        run = tmp_path / f"run_{ratio:g}"
        args = [
            "train",
            f"run_dir={run}",
            f"cache.path={embedded_cache}",
            "saes=[{architecture: topk, d_sae: 2304, k: 16, name: topk}]",
            "train.total_tokens=40960",
            "train.batch_size=512",
            "train.lr=0.0075",
            f"train.encoder_eps_ratio={ratio}",
            "train.progress=false",
        ]
        assert cli_main(args) == 0
        dead[ratio] = json.loads((run / "run.json").read_text())["results"]["topk"]["n_dead"] / 2304
    assert dead[0.0] > 0.2, dead  # measured: 54% dead under plain Adam, 5% with the relative eps
    assert dead[2.0] < 0.25 * dead[0.0], dead
