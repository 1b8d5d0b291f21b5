"""Reading the experiments' Markdown tables back in tests."""

from __future__ import annotations

import math


def table(md: str, header_start: str) -> tuple[list[str], list[list[str]]]:
    """(header cells, rows) of the Markdown table whose header starts with ``header_start``."""
    lines = md.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(header_start))
    cells = lambda line: [c.strip() for c in line.strip().strip("|").split("|")]  # noqa: E731
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(cells(line))
    return cells(lines[i]), rows


def mean_spread(cell: str) -> tuple[float, float]:
    """(mean, half-range) of a 'mean ± half' cell; both finite (every number of a seeded table has its spread)."""
    mean, half = (float(v) for v in cell.split(" ± "))
    assert math.isfinite(mean) and math.isfinite(half) and half >= 0, cell
    return mean, half
