"""Shared builders for the evaluation tests: tiny configs, run directories, identity SAEs, brute-force passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts, special_token_mask
from sae_lab.evaluation import AnalyzeConfig, EvalConfig
from sae_lab.rundir import RunDir
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae

RESID = "blocks.1.hook_resid_post"
HOOK_Z = "blocks.2.attn.hook_z"
T = 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run much faster single-threaded on shared, busy CPUs."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def data(**kw) -> DataConfig:
    return DataConfig(source="embedded", split="validation", context_length=T, **kw)


def eval_cfg(n_tokens: int = 256, **kw) -> EvalConfig:
    return EvalConfig(data=data(), n_tokens=n_tokens, batch_size=3, exclude_outliers="none", **kw)


def analyze_cfg(n_tokens: int = 512, **kw) -> AnalyzeConfig:
    base = dict(
        data=data(),
        n_tokens=n_tokens,
        batch_size=3,
        top_k=5,
        context_left=3,
        context_right=2,
        n_intervals=4,
        samples_per_interval=3,
        hist_bins=16,
        n_neighbours=4,
        n_cooccurring=4,
        n_logits=5,
        checkpoint_every_tokens=96,
        exclude_outliers="none",
    )
    base.update(kw)
    return AnalyzeConfig(**base)


def sae(arch: str = "topk", hook: str = RESID, d_in: int = 64, d_sae: int = 128, seed: int = 0, **kw):
    torch.manual_seed(seed)
    cfg = dict(architecture=arch, d_in=d_in, d_sae=d_sae, hook_name=hook, name=kw.pop("name", f"{arch}_{seed}"))
    if arch != "standard":
        cfg["k"] = kw.pop("k", 6)
    s = build_sae(SAEConfig(**cfg, **kw)).eval()
    with torch.no_grad():  # random b_enc so that codes are not all tied to the same structure
        if s.has_encoder:
            s.b_enc.normal_(0, 0.02)
    return s


def identity_sae(d_in: int, hook: str):
    """A 'standard' ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: x_hat = relu(x) - relu(-x) = x exactly."""
    s = sae("standard", hook, d_in, 2 * d_in, name="identity")
    eye = torch.eye(d_in)
    with torch.no_grad():
        s.W_enc.copy_(torch.cat([eye, -eye], 1))
        s.W_dec.copy_(torch.cat([eye, -eye], 0))
        s.b_enc.zero_(), s.b_dec.zero_()
    return s


def make_run(root: Path, saes: list) -> Path:
    """A run directory as training leaves it: config.yaml + saes/<name>/ (weights apply to raw activations)."""
    run = RunDir(root)
    for s in saes:
        SAEDir(run.sae_dir(s.cfg.name)).save(s)
    run.write_config({"model": {"name": "tiny-llama"}, "activations": {"exclude_outliers": None}})
    return root


def contexts(model, cfg) -> np.ndarray:
    return np.stack(list(iter_contexts(cfg.data, model.tokenizer))[: cfg.n_contexts])


@torch.no_grad()
def brute_acts(model, tokens: np.ndarray, hook: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean logits, activations [n, T, d], keep mask [n, T]) from one plain forward per context."""
    logits, acts = [], []
    for row in tokens:
        lg, cache = model.bridge.run_with_cache(torch.as_tensor(row[None], dtype=torch.long))
        logits.append(lg[0].float())
        acts.append(cache[hook][0].reshape(row.shape[0], -1).float())
    keep = torch.from_numpy(~special_token_mask(tokens, model.tokenizer))
    return torch.stack(logits), torch.stack(acts), keep
