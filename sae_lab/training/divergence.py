"""Divergence: training that made an SAE worse instead of better is a failure, never "done".

Both rules judge the logged windows' FVU (of the normalised activations) against the FVU before the first step,
which is 1: the decoder bias starts at the data's mean (or geometric median) and an FVU of 1 is what predicting
the mean gives. The first logged window cannot be the reference, because a run that blows up at once (e.g.
``train.lr=1000``: FVU 1e16 in its first window) would be judged against its own blow-up.

- **sustained blow-up** during training: the window FVU exceeds ``BLOWUP`` (x the starting FVU of 1), or is not
  finite, for ``PATIENCE`` logged windows in a row;
- **worse than the mean at the end**: the final FVU is above 1 (the mean predicts better) or not finite.
"""

from __future__ import annotations

import math

START_FVU = 1.0
BLOWUP = 10.0
PATIENCE = 3


class DivergedError(FloatingPointError):
    """Training diverged; the message names the SAEs, their FVU, and what to change."""


class DivergenceGuard:
    """Tracks each SAE's logged FVU; ``update`` returns the names that blew up for PATIENCE windows."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        self.strikes: dict[str, int] = {}

    def update(self, name: str, fvu: float | None) -> bool:
        """Record one logged window; True when ``name`` has diverged (sustained blow-up)."""
        if fvu is None:
            return False
        self.last[name] = fvu
        bad = not math.isfinite(fvu) or fvu > BLOWUP * START_FVU
        self.strikes[name] = self.strikes.get(name, 0) + 1 if bad else 0
        return self.strikes[name] >= PATIENCE

    def failed_at_end(self, name: str) -> bool:
        """The final-window rule: FVU above the starting FVU of 1, or not finite."""
        fvu = self.last.get(name)
        return fvu is not None and not fvu <= START_FVU  # nan compares False


def diverged_message(names: list[str], guard: DivergenceGuard, step: int, last_ckpt) -> str:
    parts = [f"'{n}' (FVU {guard.last.get(n, float('nan')):.3g})" for n in names]
    where = str(last_ckpt) if last_ckpt is not None else "none"
    return (
        f"training diverged at step {step}: SAE {', '.join(parts)} got worse instead of better (FVU above "
        f"{START_FVU:g}, that of predicting the mean, where training starts). Its weights were not saved as a "
        f"result; the last checkpoint is {where}. Lower train.lr (or set train.grad_clip), then start a new "
        "run_dir."
    )
