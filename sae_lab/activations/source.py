"""The one interface every activation stream implements: cached on disk, streamed from a model, or in memory.

Trainers and evaluators depend only on this protocol, so a cache, a live model and a test tensor are
interchangeable.
"""

from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

import torch


@runtime_checkable
class ActivationSource(Protocol):
    """A source of shuffled activation batches for one hook.

    Batches are float32 tensors of shape [batch_size, d_in], already multiplied by ``norm_scale``
    (so that the mean ||x|| is about sqrt(d_in)). Dividing by ``norm_scale`` gives raw activations.
    """

    hook_name: str
    d_in: int
    norm_scale: float

    def iter_batches(
        self, batch_size: int, seed: int = 0, skip_batches: int = 0, device: str | torch.device = "cpu"
    ) -> Iterator[torch.Tensor]:
        """Yield batches forever (epoch after epoch), deterministically for ``seed``.

        ``skip_batches`` resumes the stream exactly where a previous iterator with the same seed had
        yielded that many batches: this is what makes training resume exact.
        """
        ...

    def describe(self) -> dict:
        """A JSON-able description of where the data comes from (for run configs and eval.json)."""
        ...


class TensorSource:
    """An in-memory activation source: for tests, planted problems and small experiments."""

    def __init__(self, data: torch.Tensor, hook_name: str = "tensor", norm_scale: float = 1.0):
        if data.ndim != 2:
            raise ValueError(f"TensorSource needs a [n_tokens, d_in] tensor, got shape {tuple(data.shape)}")
        self.data = data.float()
        self.hook_name = hook_name
        self.d_in = int(data.shape[1])
        self.norm_scale = float(norm_scale)

    def iter_batches(self, batch_size: int, seed: int = 0, skip_batches: int = 0, device="cpu"):
        n = self.data.shape[0]
        if batch_size > n:
            raise ValueError(f"batch_size {batch_size} exceeds the {n} rows of this TensorSource")
        per_epoch = n // batch_size
        index = skip_batches
        while True:
            epoch, within = divmod(index, per_epoch)
            gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=gen)
            for b in range(within, per_epoch):
                rows = perm[b * batch_size : (b + 1) * batch_size]
                yield self.data[rows].to(device) * self.norm_scale
                index += 1

    @property
    def n_tokens(self) -> int:
        return int(self.data.shape[0])

    def split_holdout(self, tokens: int) -> tuple["TensorSource", "TensorSource"]:
        """(all rows but ``tokens`` evenly spaced ones, those rows): two disjoint sources."""
        if not 0 < tokens < self.n_tokens:
            raise ValueError(f"cannot hold out {tokens} of the {self.n_tokens} rows of this TensorSource")
        held = torch.zeros(self.n_tokens, dtype=torch.bool)
        held[torch.linspace(0, self.n_tokens - 1, tokens).round().long()] = True
        return (TensorSource(self.data[~held], self.hook_name, self.norm_scale),
                TensorSource(self.data[held], self.hook_name, self.norm_scale))

    def describe(self) -> dict:
        return {"kind": "tensor", "n_tokens": self.n_tokens, "d_in": self.d_in}
