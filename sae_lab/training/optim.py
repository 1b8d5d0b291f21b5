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

else:  # pragma: no cover - a torch without the wrapped functions
    EagerAdam = torch.optim.Adam


def eager_adam(params: Iterable[torch.nn.Parameter], **kwargs: Any) -> torch.optim.Adam:
    """An :class:`EagerAdam` over ``params`` (``kwargs`` as for ``torch.optim.Adam``)."""
    return EagerAdam(params, **kwargs)
