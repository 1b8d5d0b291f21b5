"""Divergence: training that made an SAE worse instead of better is a failure, never "done".

Two rules, on the logged windows (FVU of the normalised activations):

- **sustained blow-up** during training: the window FVU exceeds ``BLOWUP`` x max(1, the first window's FVU)
  for ``PATIENCE`` logged windows in a row (e.g. ``train.lr=1000``: FVU 1e16);
- **worse than the mean at the end**: the final FVU is above 1 (the mean predicts better) *and* above the
  first window's FVU (training did not help).
"""

from __future__ import annotations

import math

BLOWUP = 10.0
PATIENCE = 3


class DivergedError(FloatingPointError):
    """Training diverged; the message names the SAEs, their FVU, and what to change."""


class DivergenceGuard:
    """Tracks each SAE's logged FVU; ``update`` returns the names that blew up for PATIENCE windows."""

    def __init__(self, first_fvu: dict[str, float] | None = None):
        self.first: dict[str, float] = dict(first_fvu or {})
        self.last: dict[str, float] = {}
        self.strikes: dict[str, int] = {}

    def update(self, name: str, fvu: float | None) -> bool:
        """Record one logged window; True when ``name`` has diverged (sustained blow-up)."""
        if fvu is None:
            return False
        self.first.setdefault(name, fvu)
        self.last[name] = fvu
        bad = not math.isfinite(fvu) or fvu > BLOWUP * max(1.0, self.first[name])
        self.strikes[name] = self.strikes.get(name, 0) + 1 if bad else 0
        return self.strikes[name] >= PATIENCE

    def failed_at_end(self, name: str) -> bool:
        """The final-window rule: FVU above 1 and above where training started."""
        fvu, first = self.last.get(name), self.first.get(name)
        return fvu is not None and first is not None and fvu > 1.0 and fvu > first


def diverged_message(names: list[str], guard: DivergenceGuard, step: int, last_ckpt) -> str:
    parts = [f"'{n}' (FVU {guard.last.get(n, float('nan')):.3g}, first logged {guard.first.get(n, float('nan')):.3g})"
             for n in names]
    where = str(last_ckpt) if last_ckpt is not None else "none"
    return (f"training diverged at step {step}: SAE {', '.join(parts)} got worse instead of better. "
            f"Its weights were not saved as a result; the last checkpoint is {where}. "
            "Lower train.lr (or set train.grad_clip), then start a new run_dir.")
