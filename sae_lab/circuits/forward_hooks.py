"""Splice an SAE into the model at its hook, or ablate the hook (zero / mean).

Every function returns TransformerLens forward hooks ``[(hook_name, fn)]`` for
``bridge.run_with_hooks(tokens, fwd_hooks=...)``. A hook sees the activation in the model's own shape
(``[b, T, d]``, or ``[b, T, H, d_head]`` for per-head hooks such as ``blocks.L.attn.hook_z``); it is
flattened to ``[b, T, d_in]`` for the SAE and reshaped back.

``where`` (bool ``[b, T]``, optional) restricts the change to those positions; elsewhere the clean
activation passes through. Evaluation uses it to leave BOS/EOS/pad (and outlier) positions untouched,
the same positions the reconstruction metrics skip.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch

from sae_lab.circuits.errors import CircuitError
from sae_lab.models import LoadedModel
from sae_lab.saes.base import BaseSAE

Hook = tuple[str, Callable]
Mode = Literal["reconstruct", "zero", "mean"]


def _flat(act: torch.Tensor) -> torch.Tensor:
    return act.reshape(*act.shape[:2], -1)


def _apply(act: torch.Tensor, new: torch.Tensor, where: torch.Tensor | None) -> torch.Tensor:
    """``new`` [b, T, d_in] (or broadcastable) in the shape of ``act``, only at ``where``."""
    flat = _flat(act)
    new = new.to(dtype=act.dtype, device=act.device).expand_as(flat)
    if where is not None:
        new = torch.where(where.to(act.device).unsqueeze(-1), new, flat)
    return new.reshape(act.shape)


def splice_hooks(
    sae: BaseSAE,
    hook_name: str | None = None,
    mode: Mode = "reconstruct",
    mean: torch.Tensor | None = None,
    where: torch.Tensor | None = None,
) -> list[Hook]:
    """Hooks that replace ``hook_name`` (default ``sae.cfg.hook_name``) by the SAE reconstruction ('reconstruct'),
    by zeros ('zero') or by ``mean`` [d_in] ('mean'). The SAE uses its inference rule (``sae.forward``)."""
    name = hook_name or sae.cfg.hook_name
    if mode != "reconstruct":
        return ablation_hooks(name, mode, mean, where)

    def fn(act, hook=None):
        x = _flat(act).to(sae.W_dec.dtype)
        return _apply(act, sae(x), where)

    return [(name, fn)]


def ablation_hooks(
    hook_name: str, mode: Literal["zero", "mean"], mean: torch.Tensor | None = None, where: torch.Tensor | None = None
) -> list[Hook]:
    """Hooks that zero-ablate or mean-ablate ``hook_name`` (``mean`` [d_in] is the flattened mean activation)."""
    if mode == "mean" and mean is None:
        raise CircuitError("mode='mean' needs the mean activation (a [d_in] tensor)")
    if mode not in ("zero", "mean"):
        raise CircuitError(f"mode must be 'reconstruct', 'zero' or 'mean', got {mode!r}")

    def fn(act, hook=None):
        value = torch.zeros((), dtype=act.dtype, device=act.device) if mode == "zero" else mean
        return _apply(act, value, where)

    return [(hook_name, fn)]


def replace_hooks(hook_name: str, value: torch.Tensor, where: torch.Tensor | None = None) -> list[Hook]:
    """Hooks that put a precomputed ``value`` [b, T, d_in] (e.g. an SAE's x_hat) at ``hook_name``."""

    def fn(act, hook=None):
        return _apply(act, value, where)

    return [(hook_name, fn)]


@torch.inference_mode()
def run_with_sae(
    model: LoadedModel,
    tokens,
    sae: BaseSAE,
    mode: Mode = "reconstruct",
    mean: torch.Tensor | None = None,
    where: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``[b, T, vocab]`` of ``model`` (a LoadedModel) with ``sae`` spliced in at its hook. ``tokens``: a
    prompt or a ``[b, T]`` batch of token ids (checked as ``Spliced.run``'s)."""
    from sae_lab.circuits import checks

    ids = checks.prompt_ids(model, tokens, "tokens", batch=True)
    checks.sae(sae)
    return model.bridge.run_with_hooks(ids, fwd_hooks=splice_hooks(sae, None, mode, mean, where))
