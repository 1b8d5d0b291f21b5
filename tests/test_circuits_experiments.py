"""Reduced versions of the circuit experiments (IOI; attention-output SAE) on the embedded model: they run,
and the Markdown tables they write have the expected columns and finite numbers."""

import math
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.embedded
sys.path.insert(0, str(Path(__file__).parent.parent / "experiments"))


def tables(md: str) -> dict[str, list[dict]]:
    """{section heading: rows} for every Markdown table in ``md``."""
    out = {}
    for section in re.split(r"^## ", md, flags=re.M)[1:]:
        lines = [ln for ln in section.splitlines() if ln.startswith("|")]
        if len(lines) < 2:
            continue
        cells = [[c.strip() for c in re.split(r"(?<!\\)\|", ln.strip()[1:-1])] for ln in lines]  # \| is a pipe
        out[section.splitlines()[0]] = [dict(zip(cells[0], row)) for row in cells[2:]]
    return out


def numbers(rows: list[dict], cols: list[str]) -> list[float]:
    vals = [float(r[c]) for r in rows for c in cols]
    assert vals and all(math.isfinite(v) for v in vals), (cols, rows)
    return vals


def test_reduced_ioi_experiment(embedded_model, tmp_path):
    import ioi

    ioi.run(tmp_path, reduced=True, model=embedded_model)
    t = tables((tmp_path / "results.md").read_text())
    behav, val, nodes, faith, edge_val, top_edges = (t[k] for k in t)
    assert len(behav) == len(ioi.TEMPLATES)
    acc = numbers(behav, ["accuracy", "mean_logit_diff"])
    assert all(0 <= a <= 1 for a in acc[::2]) and any(r["chosen"] == "True" for r in behav)
    r = numbers(val, ["pearson", "feature_total", "error_total"])
    assert -1 <= r[0] <= 1
    numbers(nodes, ["position", "feature", "estimate", "exact"])
    f = numbers(faith, ["n_kept", "metric", "faithfulness", "model", "empty"])
    assert len(faith) == 3 and f[0] == 0
    pe = numbers(edge_val, ["edges", "pearson", "sum_estimate", "sum_exact"])
    assert {r["method"] for r in edge_val} == {"atp", "ig"} and all(-1 <= p <= 1 for p in pe[1::4])
    numbers(top_edges, ["estimate", "exact"])
    assert len(top_edges) > 0
    assert (tmp_path / "ioi.html").stat().st_size > 1000


def test_reduced_attention_sae_experiment(embedded_model, tmp_path):
    import attn_sae

    res = attn_sae.run(tmp_path, reduced=True, model=embedded_model)
    assert res["eval"]["ce_sae_spliced"] == pytest.approx(res["eval"]["ce_sae"], rel=1e-5)  # Spliced == eval
    t = tables((tmp_path / "results.md").read_text())
    ev, feats = (t[k] for k in t)
    fvu, *_ = numbers(ev, ["fvu", "l0_mean", "ce_clean", "ce_sae", "ce_sae_spliced", "loss_recovered_zero"])
    assert 0 < fvu < 2
    numbers(feats, ["feature", "density", "activation", "pre_activation", "bias", "top_head", "top_source"])
    assert all(float(r["sum_error"]) < 1e-3 for r in feats) and len(feats) == 2
    assert (tmp_path / "attn_sae.html").stat().st_size > 1000
