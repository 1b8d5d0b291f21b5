"""Small shared builders for the training tests: tiny SAE configs, tiny train configs, planted data, and a plain
Adam loop for the SAE-level tests (the real trainer lives in sae_lab.training)."""

from __future__ import annotations

import torch

from sae_lab.activations.source import TensorSource
from sae_lab.saes import SAEConfig, get_sae_class, registered_names
from sae_lab.training import TrainConfig

D_IN = 16
D_SAE = 64
K = 4
BATCH = 64


def architectures() -> list[str]:
    """Every architecture of sae_lab.saes (not the toys test modules register)."""
    return [n for n in registered_names() if get_sae_class(n).__module__.startswith("sae_lab.")]


def sae_cfg(arch: str = "topk", name: str | None = None, d_in: int = D_IN, **kw) -> SAEConfig:
    """A tiny SAEConfig; latents die after 4 batches so dead-latent machinery (AuxK) is exercised."""
    base = dict(architecture=arch, d_in=d_in, d_sae=D_SAE, hook_name="tensor", dead_tokens=4 * BATCH)
    if "k" in get_sae_class(arch).config_class.model_fields:
        base["k"] = K
    base.update(kw)
    if name is not None:
        base["name"] = name
    return SAEConfig(**base)


def train_cfg(**kw) -> TrainConfig:
    """20 steps of 64 tokens, checkpoints every 5 steps, logs every 2: a few seconds at most."""
    base = dict(
        batch_size=BATCH,
        total_tokens=20 * BATCH,
        lr=1e-2,  # every architecture ends below FVU 1 (the divergence rule) in 20 steps on planted data
        warmup_fraction=0.1,
        checkpoint_every_tokens=5 * BATCH,
        log_every_steps=2,
        progress=False,
        b_dec_init_tokens=256,
        calibrate_tokens=256,
        device="cpu",
        decay_start=0.5,
    )
    base.update(kw)
    return TrainConfig(**base)


def planted_data(n: int = 2048, d_in: int = D_IN, n_feats: int = 32, k: int = 3, seed: int = 0) -> torch.Tensor:
    """x = offset + sum of k random unit atoms with positive coefficients, per token: a sparse planted problem."""
    g = torch.Generator().manual_seed(seed)
    atoms = torch.randn(n_feats, d_in, generator=g)
    atoms /= atoms.norm(dim=1, keepdim=True)
    idx = torch.stack([torch.randperm(n_feats, generator=g)[:k] for _ in range(n)])
    coef = torch.rand(n, k, generator=g) * 2 + 0.5
    x = (coef[..., None] * atoms[idx]).sum(1)
    return x + 0.5 * torch.randn(d_in, generator=g)  # a shared offset, for b_dec to find


def planted_source(norm_scale: float = 1.0, **kw) -> TensorSource:
    return TensorSource(planted_data(**kw), hook_name="tensor", norm_scale=norm_scale)


def adam_steps(sae, batches, lr: float = 3e-3) -> None:
    """Plain Adam on each batch of ``batches``: reconstruction MSE plus the SAE's auxiliary losses, the decoder's
    parallel gradient removed and its rows renormalised after every step."""
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    for x in batches:
        out = sae.training_forward(x)
        loss = ((out.x_hat - x) ** 2).sum(-1).mean() + sum(out.aux_losses.values(), torch.zeros(()))
        opt.zero_grad()
        loss.backward()
        sae.remove_parallel_grads()
        opt.step()
        sae.normalize_decoder()
