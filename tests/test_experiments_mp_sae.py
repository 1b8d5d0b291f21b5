"""experiments/mp_sae.py (MP-SAE's claims) in its reduced CI form, end to end: its table parsed and checked."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

pytestmark = pytest.mark.embedded


def _table(md: str, header_start: str) -> list[list[str]]:
    """The rows of the Markdown table whose header starts with ``header_start``."""
    lines = md.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[i + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_mp_sae_quick_writes_finite_tables_and_figures(tmp_path):
    import mp_sae

    result = mp_sae.main(["--quick", "--seeds", "0", "1", "--out", str(tmp_path)])
    md = (tmp_path / "mp_sae.md").read_text()
    recovery = _table(md, "| architecture | parents: best cos")
    assert [r[0] for r in recovery] == list(mp_sae.ARCHS)
    for row in recovery:
        for cell in row[1:]:
            mean, std = (float(v) for v in cell.split(" ± "))  # two seeds: every number has its spread
            assert math.isfinite(mean) and math.isfinite(std)
        assert 0 < float(row[1].split()[0]) <= 1 and 0 < float(row[2].split()[0]) <= 1  # cosines
    embedded = _table(md, "| τ | mean L0 |")
    assert [float(r[0]) for r in embedded] == list(mp_sae.TAUS)
    l0 = [float(r[1]) for r in embedded[1:]]
    assert l0 == sorted(l0, reverse=True), "a larger residual threshold must stop tokens earlier"
    assert all(-1 <= float(r[4]) <= 1 and -1 <= float(r[5]) <= 1 for r in embedded[1:])
    assert json.loads((tmp_path / "results.json").read_text())["synthetic"]["rows"] == result["synthetic"]["rows"]
    assert {p.name for p in tmp_path.glob("*.html")} == {"recovery.html", "adaptive_l0_fvu.html"}
