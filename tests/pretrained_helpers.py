"""Stand-ins for published SAEs, in their exact file layouts, served through huggingface_hub's local cache layout
(``models--org--name/snapshots/<commit>/...`` + ``refs/main``) with HF_HUB_OFFLINE=1: no test touches the network."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

REVISION = "0123456789abcdef0123456789abcdef01234567"


def use_hub_cache(monkeypatch, cache: Path) -> Path:
    """Point huggingface_hub at ``cache`` (offline) for this test and its subprocesses."""
    from huggingface_hub import constants

    cache.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def snapshot(cache: Path, repo_id: str, revision: str = REVISION) -> Path:
    """The snapshot folder of ``repo_id`` in the cache (created, with refs/main naming ``revision``)."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    snap = root / "snapshots" / revision
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def gemma_scope_params(d_in: int, d_sae: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A JumpReLU SAE in Gemma Scope's tensor names and shapes, with positive thresholds and a non-zero b_dec."""
    g = np.random.default_rng(seed)
    return {
        "W_enc": (g.standard_normal((d_in, d_sae)) * 0.3).astype(np.float32),
        "W_dec": (g.standard_normal((d_sae, d_in)) * 0.3).astype(np.float32),
        "b_enc": (g.standard_normal(d_sae) * 0.1).astype(np.float32),
        "b_dec": (g.standard_normal(d_in) * 0.5).astype(np.float32),
        "threshold": (g.uniform(0.05, 0.6, d_sae)).astype(np.float32),
    }


def write_gemma_scope(folder: Path, params: dict[str, np.ndarray], safetensors: bool = False) -> Path:
    """``params.npz`` (Gemma Scope) or ``params.safetensors`` with lower-case ``w_`` names (Gemma Scope 2)."""
    folder.mkdir(parents=True, exist_ok=True)
    if safetensors:
        path = folder / "params.safetensors"
        save_file({k.lower() if k.startswith("W_") else k: torch.from_numpy(v) for k, v in params.items()}, str(path))
    else:
        path = folder / "params.npz"
        np.savez(path, **params)
    return path


def gemma_scope_reference(params: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The published definition, in float64: f = JumpReLU_θ(x W_enc + b_enc), JumpReLU_θ(z) = z·1[z > θ];
    x̂ = f W_dec + b_dec. Returns (f, x̂)."""
    p = {k: v.astype(np.float64) for k, v in params.items()}
    z = x.astype(np.float64) @ p["W_enc"] + p["b_enc"]
    f = z * (z > p["threshold"])
    return f, f @ p["W_dec"] + p["b_dec"]


def write_sparsify(folder: Path, d_in: int, d_sae: int, k: int, seed: int = 0, **cfg) -> dict[str, torch.Tensor]:
    """sparsify's ``cfg.json`` + ``sae.safetensors`` (encoder.weight [d_sae, d_in], encoder.bias, W_dec, b_dec)."""
    g = torch.Generator().manual_seed(seed)
    W = {
        "encoder.weight": torch.randn(d_sae, d_in, generator=g) * 0.3,
        "encoder.bias": torch.randn(d_sae, generator=g) * 0.1,
        "W_dec": torch.randn(d_sae, d_in, generator=g) * 0.3,
        "b_dec": torch.randn(d_in, generator=g) * 0.5,
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(W, str(folder / "sae.safetensors"))
    c = {
        "activation": "topk",
        "expansion_factor": 32,
        "normalize_decoder": True,
        "num_latents": d_sae,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
        **cfg,
    }
    (folder / "cfg.json").write_text(json.dumps(c))
    return W


def sparsify_reference(W: dict[str, torch.Tensor], k: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sparsify's SparseCoder.encode/decode: ReLU(encoder(x - b_dec)), top k, then W_dec and b_dec."""
    pre = torch.relu(torch.nn.functional.linear(x - W["b_dec"], W["encoder.weight"], W["encoder.bias"]))
    vals, idx = pre.topk(k, dim=-1)
    z = torch.zeros_like(pre).scatter(-1, idx, vals)
    return z, z @ W["W_dec"] + W["b_dec"]
