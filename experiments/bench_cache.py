"""Benchmark: activation caching vs a bare transformers forward, and cache reading vs SAE training.

    python experiments/bench_cache.py [--tokens 16384] [--layer 15] [--rounds 3]

1. Caching throughput: sae-lab's cache writer (TransformerBridge forward stopped after the layer, masks,
   float16 conversion, shard files, fsync, SHA-256) against a bare Hugging Face forward of the same model
   cut after the same layer (default attention implementation), on the same tokens and batch size, with
   the same threads, interleaved in rounds. Reports tokens/s of each and the ratio.
2. Reading throughput: shuffled batches from the cache (GB/s of float32 delivered) against the tokens/s
   a TopK SAE training step (d_sae 4608, k 32, batch 1024) consumes, measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sae_lab.activations import cache_format as fmt
from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.activations.cache_writer import _write_own_shards, prepare_header
from sae_lab.activations.config import CacheConfig
from sae_lab.activations.generate import ActivationGenerator, HookStats
from sae_lab.configbase import build_config
from sae_lab.data.packing import iter_contexts
from sae_lab.models import embedded_store_dir, load_model


def bare_forward_rate(tokens: np.ndarray, layer: int, batch: int) -> float:
    """tokens/s of a plain HF forward of the embedded model truncated after ``layer``."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(embedded_store_dir(), dtype=torch.float32).eval()
    hf.model.layers = hf.model.layers[: layer + 1]
    ids = torch.as_tensor(tokens, dtype=torch.long)
    with torch.inference_mode():
        hf.model(ids[:batch])  # warm-up
        t0 = time.perf_counter()
        for s in range(0, len(ids), batch):
            hf.model(ids[s : s + batch]).last_hidden_state.float().cpu()
    return tokens.size / (time.perf_counter() - t0)


def cache_rate(cfg: CacheConfig, model, tokens_total: int) -> float:
    """tokens/s of writing the cache's shards (stats estimated beforehand, outside the timing)."""
    root = Path(cfg.output)
    gen = ActivationGenerator(model, cfg.activations.hooks, cfg.data.exclude_special)
    gen.forward(np.stack(list(iter_contexts(cfg.data, model.tokenizer)))[: cfg.activations.batch_size])  # warm-up
    header = prepare_header(root, cfg, model, gen)
    stats = {h: HookStats(**header["hooks"][h]["stats"]) for h in cfg.activations.hooks}
    t0 = time.perf_counter()
    _write_own_shards(root, cfg, gen, stats, 0, 1, show=False, digest=header["identity_sha256"])
    rate = tokens_total / (time.perf_counter() - t0)
    fmt.build_manifest(root, header, final=True)
    return rate


def read_rate(root: Path, batch: int = 4096, seconds: float = 3.0) -> tuple[float, float]:
    """(tokens/s, GB/s of float32) of shuffled batches from the cache, over several epochs."""
    src = ActivationCache(root, verify="none").source()
    it = src.iter_batches(batch, seed=0)
    next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += next(it).shape[0]
    dt = time.perf_counter() - t0
    return n / dt, n * src.d_in * 4 / dt / 1e9


def train_rate(d_in: int, steps: int = 8) -> float:
    """tokens/s consumed by a TopK training step (forward, backward, Adam, renorm) at the benchmark shape."""
    from sae_lab.saes import build_sae
    from sae_lab.training.step import train_step  # noqa: F401  (the real step function)

    sae = build_sae({"architecture": "topk", "d_in": d_in, "d_sae": 4608, "k": 32})
    opt = torch.optim.Adam(sae.parameters(), lr=1e-4, fused=True)
    x = torch.randn(1024, d_in)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        out = sae.training_forward(x)
        loss = ((out.x_hat - x) ** 2).mean() + sum(out.aux_losses.values())
        opt.zero_grad()
        loss.backward()
        sae.remove_parallel_grads()
        opt.step()
        sae.normalize_decoder()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return 1024 / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16, help="contexts per forward")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"threads: {torch.get_num_threads()}")
    model = load_model("embedded", device="cpu")
    hook = f"blocks.{args.layer}.hook_resid_post"
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            cfg = build_config(
                CacheConfig,
                {
                    "output": f"{tmp}/c{r}",
                    "shard_contexts": 32,
                    "data": {"max_tokens": args.tokens, "context_length": 128},
                    "activations": {"hooks": [hook], "batch_size": args.batch, "norm_sample_contexts": 8},
                },
            )
            tokens = np.stack(list(iter_contexts(cfg.data, model.tokenizer)))
            bare.append(bare_forward_rate(tokens, args.layer, args.batch))
            ours.append(cache_rate(cfg, model, tokens.size))
            print(
                f"round {r}: bare HF forward {bare[-1]:.0f} tok/s, sae-lab cache {ours[-1]:.0f} tok/s, "
                f"ratio {ours[-1] / bare[-1]:.3f}"
            )
        ratios = [o / b for o, b in zip(ours, bare)]
        print(
            f"CACHING: median sae-lab {statistics.median(ours):.0f} tok/s vs bare "
            f"{statistics.median(bare):.0f} tok/s; median ratio {statistics.median(ratios):.3f} (target >= 0.9)"
        )
        rtoks, gbs = read_rate(Path(f"{tmp}/c0"))
        trate = train_rate(model.d_model)
        print(
            f"READING: {rtoks:.0f} tok/s = {gbs:.2f} GB/s (float32 delivered); TopK training consumes "
            f"{trate:.0f} tok/s; ratio {rtoks / trate:.1f}x (target >= 20x)"
        )


if __name__ == "__main__":
    main()
