"""Statistics over seeds shared by the experiments' reports: mean ± half-range, paired differences, verdicts."""

from __future__ import annotations

import math

import numpy as np

DASH = "—"


def spread(values: list[float]) -> tuple[float, float]:
    """(mean, half-range) over seeds; NaN if any value is missing."""
    v = np.asarray(values, dtype=float)
    if v.size == 0 or np.isnan(v).any():
        return math.nan, math.nan
    return float(v.mean()), float((v.max() - v.min()) / 2)


def pm(values: list[float], digits: int) -> str:
    """'mean ± half-range' over seeds (a dash when a value is missing)."""
    mean, half = spread(values)
    return DASH if math.isnan(mean) else f"{mean:.{digits}f} ± {half:.{digits}f}"


def pick(rows: list[dict], key: str, **where) -> list[float]:
    """``key`` of the rows matching ``where``, in seed order."""
    hits = sorted((r for r in rows if all(r[w] == v for w, v in where.items())), key=lambda r: r["seed"])
    return [r[key] for r in hits]


def paired(rows: list[dict], key: str, variant: str, base: str, k: int) -> list[float]:
    """Per seed: ``key`` of ``variant`` minus that of ``base`` at k (the same seed's tokens and batches)."""
    return [a - b for a, b in zip(pick(rows, key, variant=variant, k=k), pick(rows, key, variant=base, k=k))]


def verdict(deltas: list[float], lower_is_better: bool) -> str:
    """'holds' when every seed's difference favours the variant, 'does not hold' when none does, else 'mixed'."""
    d = np.asarray(deltas, dtype=float)
    if d.size == 0 or np.isnan(d).any():
        return "n/a"
    good = d < 0 if lower_is_better else d > 0
    if (d == 0).all():
        return "tie"
    return "holds" if good.all() else "does not hold" if not good.any() else "mixed"
