"""experiments/choice_vs_topk.py (Choice vs TopK at matched sparsity) in its reduced CI form, end to end: its tables
parsed and checked, its verdicts recomputed from results.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from markdown_tables import mean_spread, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

pytestmark = pytest.mark.embedded

PER_K = [
    "k", "variant", "held-out L0", "FVU", "CE rec. (zero)", "CE rec. (mean)", "SAELens CE score", "dead", "dense",
    "underused (train)", "Zipf slope", "Zipf R²",
]  # fmt: skip
MATCHED = ["k", "matched L0", "variant"] + [
    t for m in ("FVU", "CE rec. (zero)", "CE rec. (mean)", "SAELens CE score") for t in (m, "TopK", "Δ")
]
VERDICTS = {"holds", "does not hold", "mixed", "tie", "n/a"}


def test_choice_vs_topk_quick_writes_finite_tables_verdicts_and_figures(tmp_path):
    import choice_vs_topk as cvt

    out = tmp_path / "out"
    result = cvt.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work")])
    md = (out / "choice_vs_topk.md").read_text()
    ks, variants = [8, 16], list(cvt.VARIANTS)

    header, rows = table(md, "| k | variant | held-out L0")
    assert header == PER_K
    assert [(int(r[0]), r[1]) for r in rows] == [(k, v) for k in ks for v in variants]
    for r in rows:
        v = dict(zip(header, r))
        values = {c: mean_spread(v[c])[0] for c in PER_K[2:]}
        assert 0 < values["held-out L0"] < 64 and 0 < values["FVU"] < 2
        assert all(0 <= values[c] <= 1 for c in ("dead", "dense", "underused (train)", "Zipf R²"))
        assert values["Zipf slope"] < 0  # densities fall with rank
    topk = {int(r[0]): mean_spread(r[2])[0] for r in rows if r[1] == "topk"}
    assert all(topk[k] <= k for k in ks)  # TopK's inference rule keeps at most k

    header, rows = table(md, "| k | matched L0 | variant")
    assert header == MATCHED
    assert [(int(r[0]), r[2]) for r in rows] == [(k, v) for k in ks for v in variants if v != "topk"]
    for r in rows:
        if r[1] != "—":
            assert 0 < float(r[1]) < 64
            for cell in r[3:]:
                mean_spread(cell)

    saved = json.loads((out / "results.json").read_text())
    assert len(saved["rows"]) == len(ks) * 2 * len(variants) == len(result["rows"])
    for row in saved["rows"]:
        assert row["dead_recount"] == pytest.approx(row["dead"], abs=1e-12)  # the densities' positions are eval's
    _check_verdicts(saved)
    assert {p.name for p in out.glob("*.html")} == {"fvu_vs_l0.html", "ce_vs_l0.html", "rank_density.html"}


def _check_verdicts(saved: dict) -> None:
    """The FVU verdicts follow from the matched rows (same sign in every seed), not from the text."""
    verdicts = saved["verdicts"]
    assert all(set(v.values()) <= VERDICTS for v in verdicts.values())
    fvu = next(v for title, v in verdicts.items() if title.startswith("Better reconstruction"))
    for case, word in fvu.items():
        variant, k = case.split("@k=")
        deltas = [r["fvu"] - r["fvu_topk"] for r in saved["matched"] if r["variant"] == variant and r["k"] == int(k)]
        expected = (
            "n/a"
            if not deltas
            else "holds"
            if all(d < 0 for d in deltas)
            else "does not hold"
            if all(d >= 0 for d in deltas) and any(d > 0 for d in deltas)
            else "tie"
            if all(d == 0 for d in deltas)
            else "mixed"
        )
        assert word == expected, (case, deltas)
