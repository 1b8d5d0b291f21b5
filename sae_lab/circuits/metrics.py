"""Metrics for attribution: functions of the logits that return one number."""

from __future__ import annotations

from typing import Callable

import torch

from sae_lab.circuits import checks
from sae_lab.circuits.errors import CircuitError


class LogitDiff:
    """``logits[position, a] - logits[position, b]`` (of each sequence, averaged over a batch)."""

    def __init__(self, a: str, b: str, position: int = -1):
        self.a, self.b = (
            checks.A.as_text(t, n, CircuitError, "a single-token string such as ' Mary'")
            for t, n in ((a, "a"), (b, "b"))
        )
        if a == b:
            raise CircuitError(
                f"a and b are the same token {a!r}: their logit difference is always 0; name two different tokens"
            )
        self.position = checks.A.as_int(position, "position", CircuitError)

    def bind(self, model) -> Callable[[torch.Tensor], torch.Tensor]:
        ia, ib = checks.token(model, self.a, "a"), checks.token(model, self.b, "b")

        def metric(logits: torch.Tensor) -> torch.Tensor:
            last = logits[..., checks.position(self.position, logits.shape[-2]), :]
            return (last[..., ia] - last[..., ib]).mean()

        return metric

    def __repr__(self) -> str:
        return f"logit_diff({self.a!r}, {self.b!r})"


def logit_diff(a: str, b: str, position: int = -1) -> LogitDiff:
    """The logit of single-token ``a`` minus that of ``b`` at ``position`` (default: the last token)."""
    return LogitDiff(a, b, position)


def bind_metric(metric, model) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable ``logits -> scalar tensor`` (metrics with ``bind(model)`` get the model's tokenizer)."""
    if hasattr(metric, "bind"):
        metric = metric.bind(model)
    if not callable(metric):
        raise CircuitError(f"metric must be a function of the logits returning a scalar, got {type(metric).__name__}")
    return metric


def scalar(value, what: str = "the metric") -> torch.Tensor:
    """``value`` as a 0-d tensor, or CircuitError naming its shape."""
    if not isinstance(value, torch.Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise CircuitError(
            f"{what} must return a scalar tensor (one number), got shape {shape}; reduce it, "
            f"e.g. with .sum() or .mean()"
        )
    if not bool(torch.isfinite(value.detach()).all()):
        raise CircuitError(f"{what} returned {float(value)}, not a finite number")
    return value.reshape(())


def differentiable(value: torch.Tensor, what: str = "the metric") -> torch.Tensor:
    """``value`` if autograd can differentiate it, else CircuitError (it does not depend on the logits)."""
    if not value.requires_grad:
        raise CircuitError(
            f"{what} has no gradient path to the logits: compute it from the logits with torch "
            f"operations (no .item(), .detach(), or new tensors)"
        )
    return value
