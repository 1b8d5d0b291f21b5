"""On the real embedded model: after a short run (100 steps), the held-out L0 of Mutual and Feature Choice under
their inference rule is within 5% of k, and eval reports training L0 beside held-out L0."""

import itertools
import json

import numpy as np
import pytest
import torch

import sae_lab
from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.activations.generate import ActivationGenerator
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation.evaluate import evaluate_run
from sae_lab.saes import SAEConfig
from sae_lab.training import TrainConfig, train_sweep

pytestmark = pytest.mark.embedded
K = 16


def unseen_activations(model, cache_dir, hook, n_contexts=64):
    """Raw activations of train-split contexts the cache (hence training) never saw: the same distribution,
    held out. Masks as the cache does: BOS/EOS/pad and norms above 10x the median."""
    seen = ActivationCache(cache_dir).manifest["totals"]["contexts"]
    data = DataConfig(split="train", context_length=128)
    tokens = np.stack(list(itertools.islice(iter_contexts(data, model.tokenizer), seen + 40, seen + 40 + n_contexts)))
    gen = ActivationGenerator(model, [hook])
    acts = gen.forward(tokens)[hook]
    keep = torch.from_numpy(~gen.special_mask(tokens))
    x = acts[keep]
    norms = x.norm(dim=-1)
    return x[norms <= 10 * norms.median()]


def test_choice_saes_held_out_l0_matches_k(embedded_cache, embedded_model, tmp_path):
    source = ActivationCache(embedded_cache).source()
    saes = [
        SAEConfig(architecture="mutual_choice", d_in=576, d_sae=1152, k=K, name="mc", hook_name=source.hook_name),
        SAEConfig(
            architecture="feature_choice",
            d_in=576,
            d_sae=1152,
            k=K,
            name="fc",
            capacity_rule="zipf",
            zipf_alpha=1.0,
            hook_name=source.hook_name,
        ),
    ]
    # 100 steps inside one epoch of the ~20k-token cache; the calibration sample is 4,096 tokens of whole contexts
    # spread over the cache, held out from training
    cfg = TrainConfig(
        batch_size=128,
        total_tokens=100 * 128,
        lr=1e-3,
        log_every_steps=20,
        progress=False,
        device="cpu",
        calibrate_tokens=4096,
    )
    train_sweep(saes, source, cfg, tmp_path / "run", extra_config={"model": {"name": "embedded"}})
    x = unseen_activations(embedded_model, embedded_cache, source.hook_name)
    ev = EvalConfig(
        data=DataConfig(split="validation", context_length=128),
        n_tokens=4096,
        batch_size=8,
        ce_loss=False,
        exclude_outliers=10.0,
    )
    summary = evaluate_run(tmp_path / "run", ev, model=embedded_model)  # other topics: reported, not asserted
    status = json.loads((tmp_path / "run" / "run.json").read_text())["results"]
    for name in ("mc", "fc"):
        sae = sae_lab.load_sae(tmp_path / "run" / "saes" / name)
        with torch.no_grad():
            l0 = float((sae.encode(x) > 0).sum(-1).float().mean())
        m, cal = summary["saes"][name], status[name]["threshold_calibration"]
        report = (name, len(x), l0, m["l0_mean"], m["train_l0"], cal)
        assert m["train_l0"] == status[name]["l0"], report  # eval reports the training L0 of run.json
        assert abs(l0 - K) <= 0.05 * K, report
        assert m["l0_heldout_over_train"] == pytest.approx(m["l0_mean"] / m["train_l0"])
        print("held-out L0", report)
