"""Learning-rate schedule: linear warm-up, constant, then cosine or linear decay to lr_end."""

from __future__ import annotations

import math

import torch

from sae_lab.training.config import TrainConfig


class WarmupDecay:
    """lr multiplier for step ``s`` (0-based, the step about to be taken).

    Warm-up rises linearly from 1/(warmup_steps+1) to 1 over ``warmup_steps``; the factor stays 1 until
    ``decay_start_step``, then goes to ``lr_end`` at the last step, along a cosine or a line. A plain object
    of numbers, so ``LambdaLR.state_dict()`` stays loadable with ``weights_only=True``.
    """

    def __init__(self, total_steps: int, warmup_steps: int, decay: str, decay_start: float, lr_end: float):
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay = str(decay)
        self.decay_start_step = max(int(decay_start * total_steps), self.warmup_steps)
        self.lr_end = float(lr_end)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.decay == "none" or step < self.decay_start_step:
            return 1.0
        span = max(self.total_steps - 1 - self.decay_start_step, 1)
        progress = min((step - self.decay_start_step) / span, 1.0)
        if self.decay == "cosine":
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            shape = 1.0 - progress
        return self.lr_end + (1.0 - self.lr_end) * shape


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR following :class:`WarmupDecay` for ``cfg``; call ``.step()`` once per optimiser step."""
    fn = WarmupDecay(cfg.total_steps, cfg.warmup_steps, cfg.decay, cfg.decay_start, cfg.lr_end)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
