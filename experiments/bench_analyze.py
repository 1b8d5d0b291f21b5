"""Benchmark: `analyze` throughput vs caching throughput, and feature-page query latency.

    python experiments/bench_analyze.py [--tokens 32768] [--rounds 3] [--hook blocks.15.hook_resid_post] [--d-sae 4608]

In each of ``--rounds`` interleaved rounds, on the same tokens: 1. the bare forward (ActivationGenerator.forward,
the forward `sae-lab cache` runs); 2. caching throughput (the cache writer, as in bench_cache.py); 3.
`analyze_sae_dir` with a TopK SAE (k=32; trained briefly on the same tokens, or --sae random): the streaming
pass alone and end to end (+ logit effects,
neighbours, database). Reports per-round ratios and their medians: analyze end to end / caching (issue 4's
target: >= 0.8) and the streaming pass / the bare forward. Then feature_page latency on a synthetic database
of 16,384 latents (the default analyze settings' sizes): median and p95 over 200 random features. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_cache import cache_rate  # the same cache-writer timing as experiments/bench_cache.py

from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.activations.cache_writer import build_cache
from sae_lab.activations.config import CacheConfig
from sae_lab.activations.generate import ActivationGenerator
from sae_lab.configbase import build_config
from sae_lab.data.config import DataConfig
from sae_lab.evaluation import AnalyzeConfig, FeatureDB, analyze_sae_dir
from sae_lab.evaluation.inputs import iter_batches
from sae_lab.models import load_model
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae
from sae_lab.training import TrainConfig, train_sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from synthetic_db import write_synthetic_db  # noqa: E402


def bench_forward(model, cfg: AnalyzeConfig, hook: str) -> float:
    gen = ActivationGenerator(model, [hook], exclude_special=False)
    batches = [tokens for _, tokens in iter_batches(cfg, model.tokenizer)]
    gen.forward(batches[0])  # warm-up (threads, allocator): the first forward of a process is slower
    t0 = time.perf_counter()
    for tokens in batches:
        gen.forward(tokens)
    return sum(b.size for b in batches) / (time.perf_counter() - t0)


def make_sae(model, cfg: AnalyzeConfig, args, root: Path) -> Path:
    """The SAE directory to analyse: a TopK SAE trained for a few epochs on the benchmark's own tokens (codes with
    a trained SAE's structure: Zipf-like densities), or with --sae random an untrained one (codes spread evenly
    over all latents: more new top examples and interval samples per batch, the slower case)."""
    torch.manual_seed(0)
    sae_cfg = SAEConfig(
        architecture="topk", d_in=model.d_model, d_sae=args.d_sae, k=32, hook_name=args.hook, name="bench"
    )
    if args.sae == "random":
        SAEDir(root / "random").save(build_sae(sae_cfg))
        return root / "random"
    cache = build_config(
        CacheConfig,
        {
            "output": str(root / "train_cache"),
            "shard_contexts": 32,
            "data": {**cfg.data.model_dump(), "max_tokens": cfg.n_contexts * cfg.data.context_length},
            "activations": {"hooks": [args.hook], "batch_size": args.batch_size},
        },
    )
    build_cache(cache, model=model, progress=False)
    source = ActivationCache(cache.output).source(args.hook)
    train = TrainConfig(batch_size=1024, total_tokens=4 * source.n_tokens, lr=2e-3, progress=False, device="cpu")
    train_sweep([sae_cfg], source, train, root / "train_run")
    return root / "train_run" / "saes" / "bench"


def bench_analyze(model, cfg: AnalyzeConfig, sae_dir: Path, root: Path) -> dict:
    shutil.copytree(sae_dir, root / "bench")  # a fresh copy per round: no database or checkpoint from before
    import sae_lab.evaluation.analyze as A

    stream = {"t": 0.0}
    orig = A.write_db

    def timed_write(*args, **kw):  # the streaming pass ends where the database work starts
        stream["t"] = time.perf_counter() - t0
        return orig(*args, **kw)

    A.write_db = timed_write
    t0 = time.perf_counter()
    out = analyze_sae_dir(root / "bench", model, cfg)
    total = time.perf_counter() - t0
    A.write_db = orig
    return {
        "tokens": out["tokens"],
        "stream_tok_s": out["tokens"] / stream["t"],
        "end_to_end_tok_s": out["tokens"] / total,
        "finalise_s": total - stream["t"],
        "db": out["databases"]["bench"],
    }


def bench_queries(root: Path, n_features: int = 16_384, n: int = 200) -> dict:
    path = write_synthetic_db(root / "synthetic16k.sqlite", n_features)
    t0 = time.perf_counter()
    db = FeatureDB(path)
    open_s = time.perf_counter() - t0
    rng = random.Random(0)
    times = []
    for _ in range(n):
        i = rng.randrange(n_features)
        t = time.perf_counter()
        db.feature_page(i)
        times.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    hits = db.features_with_logit(" Paris")
    logit_ms = (time.perf_counter() - t) * 1000
    return {
        "n_features": n_features,
        "db_mb": round(path.stat().st_size / 2**20, 1),
        "open_s": round(open_s, 3),
        "page_ms_median": round(statistics.median(times), 2),
        "page_ms_p95": round(float(np.percentile(times, 95)), 2),
        "features_with_logit_ms": round(logit_ms, 2),
        "features_with_logit_hits": len(hits),
    }


def bench_round(model, cfg: AnalyzeConfig, args, sae_dir: Path, root: Path) -> dict:
    """One round: bare forward, cache writer and analysis on the same tokens, back to back."""
    fwd = bench_forward(model, cfg, args.hook)
    n_tokens = cfg.n_contexts * cfg.data.context_length
    cache_cfg = build_config(
        CacheConfig,
        {
            "output": str(root / "cache"),
            "shard_contexts": 32,
            "data": {**cfg.data.model_dump(), "max_tokens": n_tokens},
            "activations": {"hooks": [args.hook], "batch_size": args.batch_size, "norm_sample_contexts": 8},
        },
    )
    caching = cache_rate(cache_cfg, model, n_tokens)
    an = bench_analyze(model, cfg, sae_dir, root)
    return {
        "forward_tok_s": round(fwd, 1),
        "caching_tok_s": round(caching, 1),
        "analyze_stream_tok_s": round(an["stream_tok_s"], 1),
        "analyze_end_to_end_tok_s": round(an["end_to_end_tok_s"], 1),
        "finalise_s": round(an["finalise_s"], 2),
        "ratio_end_to_end_vs_caching": round(an["end_to_end_tok_s"] / caching, 3),
        "ratio_stream_vs_forward": round(an["stream_tok_s"] / fwd, 3),
        "tokens": an["tokens"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32768)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument(
        "--sae", choices=["trained", "random"], default="trained", help="the TopK SAE analysed (see make_sae)"
    )
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--split", default="train", help="embedded corpus split (train ~100k tokens, validation ~11k)")
    ap.add_argument("--skip-model", action="store_true", help="only the query benchmark")
    ap.add_argument("--skip-query", action="store_true", help="no query benchmark")
    args = ap.parse_args()
    result = {"torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_model:
            model = load_model("embedded", device="cpu")
            cfg = AnalyzeConfig(
                data=DataConfig(split=args.split, context_length=128),
                n_tokens=args.tokens,
                batch_size=args.batch_size,
                checkpoint_every_tokens=10**9,
            )
            sae_dir = make_sae(model, cfg, args, Path(tmp))
            rounds = [bench_round(model, cfg, args, sae_dir, Path(tmp) / f"round{r}") for r in range(args.rounds)]
            result.update(
                {
                    "hook": args.hook,
                    "d_sae": args.d_sae,
                    "sae": args.sae,
                    "tokens": rounds[0]["tokens"],
                    "rounds": rounds,
                    "median_ratio_end_to_end_vs_caching": statistics.median(
                        r["ratio_end_to_end_vs_caching"] for r in rounds
                    ),
                    "median_ratio_stream_vs_forward": statistics.median(r["ratio_stream_vs_forward"] for r in rounds),
                }
            )
        if not args.skip_query:
            result["query"] = bench_queries(Path(tmp))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
