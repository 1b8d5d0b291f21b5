"""When and how do latents die at a high learning rate? The dead count per step and the dead latents' geometry.

    python experiments/dead_latents_timeline.py CACHE_DIR [--arch topk] [--width 4608] [--factor 2]
        [--encoder-eps-ratio 0] [--epochs 2]

Trains one SAE (TopK by default) on the cache as ``lr_default.py`` does (batches of 1,024, 2% warm-up, decay from
60%) at ``factor`` times the base ``lr: auto`` rule (scale 1), and prints, every 10 steps, the latents silent for the
last 10 steps and those that have never fired; then, at the end, the dead latents' encoder norm, b_enc,
encoder-decoder cosine and nearest live decoder direction against the live ones', and (for an SAE with a global
threshold) their largest pre-activation on the first 4,096 cached tokens against that threshold. Issue 18, item 6:
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
from sae_lab.training import train_sweep
from sae_lab.training.config import auto_lr

SILENT_STEPS = 10


def geometry(sae, dead: torch.Tensor) -> dict[str, tuple[float, float]]:
    """(dead, live) means of the encoder row norm, b_enc and encoder-decoder cosine; (dead, live) medians of the
    largest cosine between a latent's decoder row and another live latent's."""
    with torch.no_grad():
        enc = sae.W_enc.t()  # [d_sae, d_in]
        dec = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
        live = ~dead
        cos_to_live = dec @ dec[live].t()
        cos_to_live[live.nonzero().squeeze(1), torch.arange(int(live.sum()))] = -1  # not itself
        nearest = cos_to_live.max(dim=1).values
        enc_dec = (enc / enc.norm(dim=1, keepdim=True) * dec).sum(1)

        def pair(t: torch.Tensor, reduce=torch.mean) -> tuple[float, float]:
            return float(reduce(t[dead])) if dead.any() else float("nan"), float(reduce(t[live]))

        return {
            "encoder norm": pair(enc.norm(dim=1)),
            "b_enc": pair(sae.b_enc),
            "encoder-decoder cosine": pair(enc_dec),
            "nearest live decoder cosine (median)": pair(nearest, torch.median),
        }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("--arch", default="topk")
    p.add_argument("--width", type=int, default=4608)
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--encoder-eps-ratio", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=2)
    a = p.parse_args(argv)
    source = ActivationCache(a.cache).source()
    cfg = sweep_train_config(source, a.factor * auto_lr(a.width), a.epochs, encoder_eps_ratio=a.encoder_eps_ratio)
    sae_cfg = SAEConfig(architecture=a.arch, name=a.arch, d_in=source.d_in, d_sae=a.width, k=32,
                        hook_name=source.hook_name)  # fmt: skip
    ever = torch.zeros(a.width, dtype=torch.bool)
    print(f"{a.arch}, {a.width:,} latents, lr {cfg.lr:.2e}, encoder_eps_ratio {a.encoder_eps_ratio:g}")
    print(f"step | silent for {SILENT_STEPS} steps | never fired")

    def log(info) -> None:
        sae = info.members[0].sae
        ever.logical_or_(sae.tokens_since_fired == 0)
        if info.step % 10 == 0 or info.step < 5:
            silent = int((sae.tokens_since_fired >= SILENT_STEPS * cfg.batch_size).sum())
            print(f"{info.step} | {silent} | {int((~ever).sum())}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        result = train_sweep([sae_cfg], source, cfg, Path(tmp) / "run", callbacks=[log])
    sae = result.saes[a.arch]
    dead = sae.tokens_since_fired >= SILENT_STEPS * cfg.batch_size
    print(f"dead at the end: {int(dead.sum())} ({100 * float(dead.float().mean()):.1f}%)")
    for name, (d, live) in geometry(sae, dead).items():
        print(f"{name}: dead {d:.3f}, live {live:.3f}")
    if hasattr(sae, "threshold") and sae.threshold.numel() == 1:
        with torch.no_grad():
            top = sae.pre_acts(source.head(4096, 1024)).max(dim=0).values
        print(f"threshold {float(sae.threshold):.3f}; largest pre-activation over 4,096 tokens: "
              f"dead median {float(top[dead].median()) if dead.any() else float('nan'):.3f}, "
              f"live median {float(top[~dead].median()):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
