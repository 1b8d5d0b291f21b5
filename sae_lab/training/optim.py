"""Adam without torch._dynamo: the same optimiser, but its construction does not import the compiler stack.

``torch.optim.Optimizer`` wraps ``add_param_group``, ``state_dict``, ``load_state_dict``, ``zero_grad`` and
``Adam.step`` in decorators that import ``torch._dynamo`` on first call: about 1.5-3 s on a 2-core CPU, more
than the whole of a short training run's other start-up work (experiments/bench_whole_run.py). sae-lab never
compiles the optimiser, so :class:`EagerAdam` calls the undecorated functions (``__wrapped__``) directly.
Updates, ``state_dict`` format and checkpoints are those of ``torch.optim.Adam`` (it *is* one); when a torch
version lacks the wrapped functions, :func:`eager_adam` falls back to the plain class.

Relative eps (``encoder_eps_ratio``). Adam divides each coordinate's update by the root of its own second moment,
so a latent that fires on a few tokens gets steps as large as one that fires on every batch: one firing moves its
whole encoder row by about lr · sqrt(d_in) along the sign pattern of a single token, and Adam's momentum carries
it on for ~10 steps. At the lr that fits short runs best this pushes rare latents' encoder rows off their decoder
rows until they stop firing (issue 18 item 6; BENCHMARKS.md §13). A param group with ``eps_ratio`` r > 0 gets, at
every step, eps = base_eps + r · sqrt(median over latents of the latent's mean v̂) (v̂ the bias-corrected second
moment of the group's tensor): a latent whose gradient is well below a typical latent's moves in proportion to it,
as under SGD, instead of by a full step. The median, not the mean, so a few dense latents do not set the scale.
Scale-free, and the fused kernel is kept (eps is a per-group scalar).
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

_O, _A = torch.optim.Optimizer, torch.optim.Adam
_NAMES = ("add_param_group", "state_dict", "load_state_dict", "zero_grad")
_AVAILABLE = all(hasattr(getattr(_O, n), "__wrapped__") for n in _NAMES) and hasattr(_A.step, "__wrapped__")


if _AVAILABLE:

    class EagerAdam(torch.optim.Adam):
        """``torch.optim.Adam`` whose methods skip the lazy ``torch._dynamo`` import (eager mode only)."""

        add_param_group = _O.add_param_group.__wrapped__
        state_dict = _O.state_dict.__wrapped__
        load_state_dict = _O.load_state_dict.__wrapped__
        zero_grad = _O.zero_grad.__wrapped__

        def step(self, closure=None):
            with torch.no_grad():  # what the skipped decorator does (differentiable=False)
                refresh_relative_eps(self)
                return _A.step.__wrapped__(self, closure)

        def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps):
            has_complex = super()._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
            _transposed_views(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
            return has_complex

else:  # pragma: no cover - a torch without the wrapped functions

    class EagerAdam(torch.optim.Adam):
        def step(self, closure=None):
            with torch.no_grad():
                refresh_relative_eps(self)
            return super().step(closure)


def refresh_relative_eps(optimizer: torch.optim.Adam) -> None:
    """Set each group's eps to base_eps + eps_ratio · sqrt(median over latents of the latent's mean v̂) of its
    (single) tensor, whose latent axis is the group's ``latent_dim``; groups without an ``eps_ratio`` (or with 0)
    keep their eps. Before the first step (no second moment yet) eps is base_eps."""
    for group in optimizer.param_groups:
        ratio = group.get("eps_ratio", 0.0)
        if not ratio:
            continue
        state = optimizer.state.get(group["params"][0])
        if not state:
            group["eps"] = group["base_eps"]
            continue
        v = state["exp_avg_sq"]
        per_latent = v.mean(dim=[d for d in range(v.dim()) if d != group["latent_dim"]]) if v.dim() > 1 else v
        bias_correction = 1.0 - group["betas"][1] ** float(state["step"])
        group["eps"] = group["base_eps"] + ratio * (float(per_latent.median()) / bias_correction) ** 0.5


def _transposed_views(params: list, *per_param: list) -> None:
    """Replace, in the update's tensor lists, each 2-D parameter stored transposed (``W_enc``: a transposed view
    of a contiguous tensor) and its gradient and moments by their ``.t()`` views. The update is elementwise, so it
    is the same, and the fused kernel then updates the storage in place instead of copying the parameter and its
    gradient to contiguous tensors and back (~5 ms per step at 4,608 latents)."""
    for i, p in enumerate(params):
        if p.dim() == 2 and not p.is_contiguous() and p.t().is_contiguous():
            params[i] = p.t()
            for tensors in per_param:
                if tensors:  # max_exp_avg_sqs is empty without amsgrad
                    tensors[i] = tensors[i].t()


def eager_adam(params: Iterable[torch.nn.Parameter], **kwargs: Any) -> torch.optim.Adam:
    """An :class:`EagerAdam` over ``params`` (``kwargs`` as for ``torch.optim.Adam``)."""
    return EagerAdam(params, **kwargs)
