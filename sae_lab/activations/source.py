"""The one interface every activation stream implements: cached on disk, streamed from a model, or in memory.

Trainers and evaluators depend only on this protocol, so a cache, a live model and a test tensor are
interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class HookPart:
    """Where one hook's activations sit in the batches of a source: columns ``[start, start + d_in)``, multiplied by
    ``norm_scale``. A source of one hook has one part (all columns); a source of several hooks (one training run for
    several layers) puts the hooks side by side, rows at the same token positions."""

    hook_name: str
    d_in: int
    norm_scale: float
    start: int = 0

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """This hook's columns of a batch ``x``, as a view (``x`` itself when it holds only this hook)."""
        return x if x.shape[-1] == self.d_in else x[:, self.start : self.start + self.d_in]

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This hook's columns of a batch ``x``, contiguous (for the matmuls of a training step)."""
        return self.view(x).contiguous()


def hook_parts(source: ActivationSource) -> dict[str, HookPart]:
    """The hooks of ``source`` by name: its ``hook_parts`` (a source of several hooks), else its one hook."""
    parts = getattr(source, "hook_parts", None)
    if parts is not None:
        return parts
    return {source.hook_name: HookPart(source.hook_name, int(source.d_in), float(source.norm_scale))}


def part_for(parts: dict[str, HookPart], hook: str | None) -> HookPart:
    """The part an SAE of hook ``hook`` trains on: that hook's, or the only one (a source of one hook serves an SAE
    whatever its hook_name says; training's checks compare them)."""
    if len(parts) == 1:
        return next(iter(parts.values()))
    if hook not in parts:
        raise KeyError(f"the activation source has no hook '{hook}'; it holds {', '.join(parts)}")
    return parts[hook]


def side_by_side(hooks: list[tuple[str, int, float]]) -> dict[str, HookPart]:
    """Parts for hooks ``(name, d_in, norm_scale)`` laid side by side in this order."""
    parts, start = {}, 0
    for name, d, scale in hooks:
        parts[name] = HookPart(name, int(d), float(scale), start)
        start += int(d)
    return parts


class MultiHookMixin:
    """``hook_name``, ``d_in`` and ``norm_scale`` of a source that keeps its hooks in ``hook_parts`` (one or several).

    With several hooks, ``hook_name`` joins their names with '+', ``d_in`` is the batch's total width, and
    ``norm_scale`` does not exist (each hook has its own: ``hook_parts``)."""

    hook_parts: dict[str, HookPart]

    @property
    def hook_name(self) -> str:
        return "+".join(self.hook_parts)

    @property
    def d_in(self) -> int:
        return sum(p.d_in for p in self.hook_parts.values())

    @property
    def norm_scale(self) -> float:
        if len(self.hook_parts) != 1:
            raise AttributeError(
                f"this source holds several hooks ({', '.join(self.hook_parts)}); each has its own norm_scale "
                "in source.hook_parts"
            )
        return next(iter(self.hook_parts.values())).norm_scale

    @norm_scale.setter
    def norm_scale(self, value: float) -> None:
        if len(self.hook_parts) != 1:
            raise AttributeError("this source holds several hooks; set each one's norm_scale in source.hook_parts")
        next(iter(self.hook_parts.values())).norm_scale = float(value)


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
        return (
            TensorSource(self.data[~held], self.hook_name, self.norm_scale),
            TensorSource(self.data[held], self.hook_name, self.norm_scale),
        )

    def describe(self) -> dict:
        return {"kind": "tensor", "n_tokens": self.n_tokens, "d_in": self.d_in}
