"""Metrics for attribution: functions of the logits that return one number."""

from __future__ import annotations

from typing import Callable

import torch

from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.prompts import single_token


class LogitDiff:
    """``logits[-1, a] - logits[-1, b]`` at the last position (of each sequence, averaged over a batch)."""

    def __init__(self, a: str, b: str, position: int = -1):
        self.a, self.b, self.position = a, b, position

    def bind(self, model) -> Callable[[torch.Tensor], torch.Tensor]:
        ia, ib = single_token(model, self.a), single_token(model, self.b)

        def metric(logits: torch.Tensor) -> torch.Tensor:
            last = logits[..., self.position, :]
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
        raise CircuitError(f"{what} must return a scalar tensor (one number), got shape {shape}; reduce it, "
                           f"e.g. with .sum() or .mean()")
    return value.reshape(())
