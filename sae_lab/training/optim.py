"""Adam without torch._dynamo: the same optimiser, but its construction does not import the compiler stack.

``torch.optim.Optimizer`` wraps ``add_param_group``, ``state_dict``, ``load_state_dict``, ``zero_grad`` and
``Adam.step`` in decorators that import ``torch._dynamo`` on first call: about 1.5-3 s on a 2-core CPU, more
than the whole of a short training run's other start-up work (experiments/bench_whole_run.py). sae-lab never
compiles the optimiser, so :class:`EagerAdam` calls the undecorated functions (``__wrapped__``) directly.
Updates, ``state_dict`` format and checkpoints are those of ``torch.optim.Adam`` (it *is* one); when a torch
version lacks the wrapped functions, :func:`eager_adam` falls back to the plain class.
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
                return _A.step.__wrapped__(self, closure)

        def _init_group(self, group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps):
            has_complex = super()._init_group(group, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps)
            _transposed_views(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs)
            return has_complex

else:  # pragma: no cover - a torch without the wrapped functions
    EagerAdam = torch.optim.Adam


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
