"""A training batch that carries the LM loss's gradient at its rows (for gradient-aware SAEs: g-SAE).

Sources without gradients yield plain ``[B, d_in]`` tensors; a gradient source
(:class:`sae_lab.activations.grad_stream.GradientStreamingSource`, ``has_gradients = True``) yields
:class:`GradBatch`. Consumers that need only the activations call :func:`split_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class GradBatch:
    """Rows ``x [B, d_in]`` and ∂L/∂x at the same rows ``grad [B, d_in]``, both in the SAE's (normalised) units."""

    x: torch.Tensor
    grad: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.x.shape

    def __getitem__(self, rows) -> "GradBatch":
        return GradBatch(self.x[rows], self.grad[rows])

    def to(self, device) -> "GradBatch":
        return GradBatch(self.x.to(device), self.grad.to(device))


def split_batch(batch: torch.Tensor | GradBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(activations, gradients or None) of a batch from any ActivationSource."""
    if isinstance(batch, GradBatch):
        return batch.x, batch.grad
    return batch, None
