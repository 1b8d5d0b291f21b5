"""Is a choice SAE's held-out FVU limited by its inference rule or by its dictionary? Three rules on two splits.

    sae-lab cache model.name=embedded data.source=embedded data.split=validation data.context_length=128 \
        'activations.hooks=[blocks.15.hook_resid_post]' activations.exclude_outliers=10.0 storage_dtype=float16 \
        output=caches/embedded_l15_val
    python experiments/held_out_gap.py caches/embedded_l15 caches/embedded_l15_val [--width 4608] [--factor 1]
        [--encoder-eps-ratio 0]

Trains Mutual Choice and TopK together (the batches and schedule of ``lr_default.py``, at ``factor`` times the base
``lr: auto`` rule, one encoder eps ratio for both), then reports each SAE's FVU on the first 11k tokens of the
training cache and of the validation cache under three rules: the SAE's own inference rule (MC: its calibrated
global threshold), the batch's top k·B (MC's training rule) and each token's top k (TopK's rule). If MC's
validation FVU is poor under every rule, the dictionary generalises worse, not its threshold. Both splits are
scaled by the training cache's norm scale. Issue 18, item 6:
BENCHMARKS.md §13.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from lr_default import sweep_train_config

from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.saes import SAEConfig
from sae_lab.saes.mutual_choice import batch_topk_select
from sae_lab.training import train_sweep
from sae_lab.training.config import auto_lr

K, B = 32, 1024


def codes(sae, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The code of ``x`` under the SAE's inference rule, the batch top k·B and the per-token top k."""
    pre = sae.pre_acts(x)
    code, vals, _ = batch_topk_select(pre, K * x.shape[0])
    v, i = pre.topk(K, dim=1)
    token_topk = torch.zeros_like(pre).scatter_(1, i, v.relu())
    return {"inference rule": sae.encode(x), "batch top k·B": code.to_dense(vals), "token top k": token_topk}


@torch.no_grad()
def fvu_by_rule(sae, x: torch.Tensor) -> dict[str, float]:
    """Σ||x - x̂||² / Σ||x - batch mean||² over batches of 1,024, for each rule of ``codes``."""
    num: dict[str, float] = {}
    den = 0.0
    for b in x.split(B):
        den += float(((b - b.mean(0)) ** 2).sum())
        for rule, z in codes(sae, b).items():
            num[rule] = num.get(rule, 0.0) + float(((b - sae.decode(z)) ** 2).sum())
    return {rule: n / den for rule, n in num.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("validation_cache")
    p.add_argument("--width", type=int, default=4608)
    p.add_argument("--factor", type=float, default=1.0)
    p.add_argument("--encoder-eps-ratio", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args()
    train, val = ActivationCache(a.cache).source(), ActivationCache(a.validation_cache).source()
    cfg = sweep_train_config(train, a.factor * auto_lr(a.width), a.epochs, encoder_eps_ratio=a.encoder_eps_ratio)
    saes = [
        SAEConfig(architecture=arch, name=arch, d_in=train.d_in, d_sae=a.width, k=K, hook_name=train.hook_name)
        for arch in ("mutual_choice", "topk")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        trained = train_sweep(saes, train, cfg, Path(tmp) / "run").saes
    n = min(train.n_tokens, val.n_tokens) // B * B
    print(f"{a.width:,} latents, lr {cfg.lr:.2e}, encoder eps ratio {a.encoder_eps_ratio:g}; FVU on {n:,} tokens")
    print("| SAE | split | inference rule | batch top k·B | token top k |")
    for split, source in (("training", train), ("validation", val)):
        x = source.head(n, B) * (train.norm_scale / source.norm_scale)  # the training cache's scale for both
        for name, sae in trained.items():
            row = fvu_by_rule(sae, x)
            print(f"| {name} | {split} | " + " | ".join(f"{v:.4f}" for v in row.values()) + " |")


if __name__ == "__main__":
    main()
