"""Shared helpers for cache tests: building caches and comparing their contents."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sae_lab.activations.config import CacheConfig
from sae_lab.configbase import build_config


def cache_config(output, hooks=("blocks.1.hook_resid_post",), max_tokens=2048, ctx=32, shard=8, **extra) -> CacheConfig:
    data = {"max_tokens": max_tokens, "context_length": ctx}
    acts = {"hooks": list(hooks), "batch_size": 4, "norm_sample_contexts": 8}
    acts.update(extra.pop("activations", {}))
    return build_config(
        CacheConfig, {"output": str(output), "data": data, "shard_contexts": shard, "activations": acts, **extra}
    )


def shard_digests(root) -> dict[str, dict]:
    manifest = json.loads((Path(root) / "manifest.json").read_text())
    return {r["name"]: r["sha256"] for r in manifest["shards"]}


def all_tokens(cache) -> np.ndarray:
    return np.concatenate([np.asarray(cache.tokens(i)) for i in range(len(cache.shards))])
