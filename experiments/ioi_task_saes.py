"""SAEs trained on the IOI task distribution (as Makelov et al. 2024 do), with the project's own pipeline: IOI
sentences (``ioi_data.write_training_text``, train split) packed into contexts with BOS between prompts, one
activation cache holding every layer's residual stream, then one run per seed that trains every architecture at
every layer on the same batches (several hooks per run)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ioi_data import write_training_text

from sae_lab import load_sae
from sae_lab.pipeline import RunConfig, build_cache_for, train_run
from sae_lab.rundir import RunDir

ARCHITECTURES = {"topk": "topk", "mp": "matching_pursuit"}  # short name in the tables: registered architecture


def hook(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def sae_name(arch: str, layer: int) -> str:
    return f"{arch}_L{layer}"


def run_config(
    work: Path, seed: int, layers: list[int], archs: list[str], tokens: int, epochs: int, k: int, expansion: int
) -> RunConfig:
    """One seed's run: each architecture at each layer, ``epochs`` passes over ``tokens`` cached IOI tokens."""
    saes = [
        {
            "architecture": ARCHITECTURES[a],
            "name": sae_name(a, layer),
            "hook_name": hook(layer),
            "expansion_factor": expansion,
            "k": k,
            "dead_tokens": max(tokens // 2, 4096),
        }
        for a in archs
        for layer in layers
    ]
    return RunConfig.model_validate(
        {
            "run_dir": str(work / "runs" / f"seed{seed}"),
            "model": {"name": "embedded"},
            "data": {
                "source": str(work / "ioi_train.jsonl"),
                "context_length": 128,
                "max_tokens": tokens,
                "separator": "bos",
            },
            "activations": {"hooks": [hook(x) for x in layers], "batch_size": 16, "exclude_outliers": 10.0},
            "cache": {"path": str(work / "cache"), "shard_contexts": 64},
            "train": {
                "batch_size": 1024,
                "total_tokens": tokens * epochs,
                "seed": seed,
                "warmup_fraction": 0.02,
                "decay_start": 0.6,
                "checkpoint_every_tokens": tokens * epochs,
                "b_dec_init_tokens": min(8192, tokens),
                "log_every_steps": 50,
                "progress": False,
            },
            "saes": saes,
        }
    )


def train_task_saes(
    model,
    work: Path,
    seed: int,
    layers: list[int],
    archs: list[str],
    n_prompts: int,
    tokens: int,
    epochs: int,
    k: int,
    expansion: int,
    templates: list[int],
) -> tuple[dict, dict]:
    """Train (or resume) one seed's SAEs; returns ``{(arch, layer): sae}`` and the timings in seconds. The IOI text
    and the cache are shared by the seeds (built once, in ``work``)."""
    work.mkdir(parents=True, exist_ok=True)
    text = work / "ioi_train.jsonl"
    if not text.is_file():
        write_training_text(text, templates, n_prompts, seed=0)
    cfg = run_config(work, seed, layers, archs, tokens, epochs, k, expansion)
    timings_path = work / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    t0 = time.perf_counter()
    build_cache_for(cfg, model)
    timings.setdefault("cache_s", time.perf_counter() - t0)
    run = RunDir(cfg.run_dir)
    if run.read_status().get("status") != "done" or f"seed{seed}_train_s" not in timings:
        t0 = time.perf_counter()
        train_run(cfg, model=model)
        timings[f"seed{seed}_train_s"] = time.perf_counter() - t0
    timings_path.write_text(json.dumps(timings, indent=2))
    saes = {(a, x): load_sae(run.sae_dir(sae_name(a, x))).eval() for a in archs for x in layers}
    return saes, timings
