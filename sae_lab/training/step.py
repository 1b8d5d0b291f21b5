"""The per-step math of SAE training, free of I/O, so a data-parallel wrapper can reuse it unchanged.

One step for one SAE on one batch ``x``:
  training_forward -> loss = reconstruction loss + sum(aux_losses) -> backward -> [grad_hook, e.g. DDP
  all-reduce] -> remove_parallel_grads -> clip -> Adam step -> normalize_decoder -> scheduler step.

NaN/inf: the loss is checked before backward and the global grad norm before the Adam step, so a bad
step raises NonFiniteValue without touching the weights. Finite grads keep Adam's update finite; the
trainer also scans the parameters themselves at every log step and before every checkpoint.

Reconstruction loss (``recon_loss``):
  - ``"fvu"`` (default): sum ||x - x_hat||^2 / sum ||x - mean_batch(x)||^2, the batch's fraction of variance
    unexplained (Gao et al.'s normalised MSE). Scale-free, so the lr does not depend on the activation scale.
  - ``"mse"``: mean over batch and dimensions of (x - x_hat)^2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from sae_lab.distributed import all_sum, global_rows, shards, sum_sq_dev
from sae_lab.saes.base import BaseSAE
from sae_lab.training.checkpoint import all_finite
from sae_lab.training.optim import eager_adam


class NonFiniteValue(FloatingPointError):
    """Raised by :func:`train_step` when the loss or a parameter stops being finite."""


@dataclass
class StepStats:
    lr: float
    loss: torch.Tensor
    mse: torch.Tensor
    fvu: torch.Tensor
    l0: float
    aux: dict[str, torch.Tensor]
    fired: torch.Tensor
    grad_norm: torch.Tensor


def recon_errors(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mse, fvu) of a batch, in float32. FVU's denominator is the batch's total variance around its mean
    (in data-parallel training, the global batch's, and both are this rank's share: they sum over ranks)."""
    x, x_hat = x.float(), x_hat.float()
    sq = (x - x_hat).pow(2)
    mse = sq.mean() if shards() == 1 else sq.sum() / (global_rows(sq.shape[0]) * sq.shape[1])
    return mse, sq.sum() / sum_sq_dev(x)


def train_step(
    sae: BaseSAE,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    x: torch.Tensor,
    *,
    recon_loss: str = "fvu",
    grad_clip: float | None = None,
    compute_dtype: torch.dtype = torch.float32,
    grad_hook: Callable[[nn.Module], None] | None = None,
    grad: torch.Tensor | None = None,
) -> StepStats:
    """One optimisation step of ``sae`` on ``x``; raises NonFiniteValue before stepping on a NaN/inf loss.
    ``grad``: the LM loss's gradient at the rows of ``x`` (a gradient source's), passed to SAEs that need it (g-SAE)."""
    lr = optimizer.param_groups[0]["lr"]
    use_autocast = compute_dtype != torch.float32
    with torch.autocast(device_type=x.device.type, dtype=compute_dtype, enabled=use_autocast):
        out = sae.training_forward(x, grad=grad) if sae.needs_gradients else sae.training_forward(x)
    mse, fvu = recon_errors(x, out.x_hat)
    aux = {k: v.float() for k, v in out.aux_losses.items()}
    loss = (fvu if recon_loss == "fvu" else mse) + sum(aux.values(), torch.zeros((), device=x.device))
    shown = _global_stats(loss, mse, fvu, aux, out.l0)  # equals the local ones in one process
    if not bool(torch.isfinite(shown["loss"])):
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in shown.items() if k not in ("loss", "l0"))
        raise NonFiniteValue(f"loss is {float(shown['loss'])} ({parts})")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_hook is not None:
        grad_hook(sae)
    sae.remove_parallel_grads()
    grad_norm = _grad_norm(sae, grad_clip)
    if not bool(torch.isfinite(grad_norm)):
        raise NonFiniteValue(f"the gradient norm is {float(grad_norm)} (loss {float(loss.detach()):.4g})")
    optimizer.step()
    sae.normalize_decoder()
    scheduler.step()
    aux = {k: shown[k] for k in aux}
    return StepStats(
        lr, shown["loss"], shown["mse"], shown["fvu"], float(shown["l0"]), aux, out.fired.detach(), grad_norm
    )


def _global_stats(loss, mse, fvu, aux: dict, l0: float) -> dict[str, torch.Tensor]:
    """The step's loss terms over the global batch (detached). One process: the values themselves. Data-parallel:
    one all-reduce: every loss term is this rank's share of the global one (they add up), L0 averages; so every
    rank sees the same values (and raises on a non-finite loss together)."""
    stats = {"loss": loss.detach(), "mse": mse.detach(), "fvu": fvu.detach(), **{k: v.detach() for k, v in aux.items()}}
    if shards() == 1:
        return {**stats, "l0": torch.tensor(l0)}
    vec = all_sum(torch.stack([*stats.values(), torch.tensor(l0 / shards(), device=loss.device)]).float())
    return dict(zip([*stats, "l0"], vec.unbind()))


def _grad_norm(sae: BaseSAE, grad_clip: float | None) -> torch.Tensor:
    """Global grad norm (before clipping), clipping to ``grad_clip`` when set. The gradients are scaled only when
    the norm exceeds it (``clip_grad_norm_`` multiplies every gradient by 1.0 otherwise: a pass over all of them)."""
    params = [p for p in sae.parameters() if p.grad is not None]
    if not hasattr(nn.utils, "get_total_norm"):  # torch < 2.6: no separate norm and scaling
        return nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else float("inf"))
    norm = nn.utils.get_total_norm([p.grad for p in params])
    if grad_clip is not None and bool(norm > grad_clip):
        nn.utils.clip_grads_with_norm_(params, grad_clip, norm)
    return norm


def first_non_finite_param(sae: BaseSAE) -> str | None:
    """Name of the first parameter holding NaN/inf, else None (one pass over the weights: call sparingly)."""
    for name, p in sae.named_parameters():
        if not all_finite(p):
            return name
    return None


def make_optimizer(
    sae: BaseSAE, lr: float, betas: tuple[float, float], eps: float, encoder_eps_ratio: float = 0.0
) -> torch.optim.Optimizer:
    """Adam (:class:`~sae_lab.training.optim.EagerAdam`), fused when the device supports it (about 4x faster than
    foreach on CPU), else the default. ``encoder_eps_ratio`` > 0 gives W_enc and b_enc each a relative eps
    (:func:`~sae_lab.training.optim.refresh_relative_eps`)."""
    groups = _param_groups(sae, eps, encoder_eps_ratio)
    try:
        return eager_adam(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return eager_adam(groups, lr=lr, betas=betas, eps=eps)


def _param_groups(sae: BaseSAE, eps: float, encoder_eps_ratio: float) -> list[dict]:
    """One group of every parameter, or, with a relative encoder eps, one group per encoder tensor before it."""
    encoder = ("W_enc", "b_enc") if encoder_eps_ratio > 0 and sae.has_encoder else ()
    named = dict(sae.named_parameters())
    rest = [p for n, p in named.items() if n not in encoder]
    latent_dim = {"W_enc": 1, "b_enc": 0}  # W_enc is [d_in, d_sae]
    return [
        {"params": [named[n]], "eps_ratio": encoder_eps_ratio, "base_eps": eps, "latent_dim": latent_dim[n]}
        for n in encoder
    ] + [{"params": rest}]


@dataclass
class WindowStats:
    """Running sums of one SAE's step stats over a logging window (checkpointed, so resumed logs match)."""

    steps: int = 0
    tokens: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    fired: torch.Tensor | None = None
    lr: float = 0.0  # the lr of the window's last step

    def add(self, s: StepStats, n_tokens: int) -> None:
        self.steps += 1
        self.lr = s.lr
        self.tokens += n_tokens
        values = {
            "loss": float(s.loss),
            "mse": float(s.mse),
            "fvu": float(s.fvu),
            "l0": s.l0,
            "grad_norm": float(s.grad_norm),
        }
        values.update({k: float(v) for k, v in s.aux.items()})
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        fired = s.fired.to(torch.float64)
        self.fired = fired if self.fired is None else self.fired.to(fired.device) + fired

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}

    def rare_frac(self, rare_density: float) -> float:
        """Fraction of latents whose firing rate in this window is below ``rare_density`` (underutilised)."""
        if self.fired is None or self.tokens == 0:
            return 0.0
        return float(((self.fired / self.tokens) < rare_density).float().mean())

    def state_dict(self) -> dict:
        return {"steps": self.steps, "tokens": self.tokens, "sums": dict(self.sums), "fired": self.fired, "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.tokens = int(state["steps"]), int(state["tokens"])
        self.sums, self.fired, self.lr = dict(state["sums"]), state["fired"], float(state["lr"])
