"""experiments/ioi_saes.py (IOI with task SAEs; Marks et al. faithfulness, Makelov et al.'s supervised
dictionaries) in its reduced CI form on the embedded model, plus the definitions it rests on, checked on
constructed cases."""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path

import pytest
import torch

from markdown_tables import mean_spread, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))


def section(md: str, heading: str) -> str:
    return md[md.index(heading) :]


def test_held_out_prompts_are_never_trained_on(tmp_path):
    from ioi_data import sample, write_training_text

    text = write_training_text(tmp_path / "t.jsonl", [0, 4], 600, seed=0).read_text()
    trained = {json.loads(line)["text"].rsplit(" ", 1)[0] for line in text.splitlines()}
    held = {p.text for t in (0, 4) for p in sample(t, 200, seed=1)}
    assert len(trained) > 100 and len(held) > 100
    assert not trained & held


def test_attribute_dictionary_reconstructs_an_additive_node_exactly():
    from ioi_data import NAMES, Prompt
    from ioi_supervised import AttributeDictionary

    g = torch.Generator().manual_seed(0)
    base, io_dirs, order_dirs = torch.randn(3, 5, generator=g), torch.randn(4, 3, 5, generator=g), torch.randn(2, 3, 5)
    prompts = [Prompt(0, NAMES[i], NAMES[9], "park", "ball", o) for i in range(4) for o in ("ABB", "BAB")]
    acts = torch.stack([base + io_dirs[NAMES.index(p.io)] + order_dirs[int(p.order == "BAB")] for p in prompts])
    d = AttributeDictionary.fit(acts, prompts)
    assert torch.allclose(d.reconstruct(prompts), acts, atol=1e-5)
    # dropping one attribute's part leaves exactly that attribute's centred variation unexplained
    partial = d.mean + d.part("order", prompts)
    assert not torch.allclose(partial, acts, atol=1e-3)


def test_top_nodes_ranks_by_absolute_estimate_across_saes():
    from ioi_faithfulness import top_nodes

    est = {"a": torch.zeros(3, 4), "b": torch.zeros(3, 4)}
    est["a"][2, 1], est["b"][0, 3], est["b"][1, 0] = 0.5, -2.0, 1.0
    assert top_nodes(est, 3) == [("b", 0, 3), ("b", 1, 0), ("a", 2, 1)]


def test_sae_edit_with_every_feature_is_the_counterfactual_code_plus_the_clean_error():
    from ioi_supervised import sae_edit

    from sae_lab.saes import build_sae

    sae = build_sae({"architecture": "topk", "d_in": 6, "d_sae": 12, "k": 2, "hook_name": "h"}).eval()
    a, a_cf = torch.randn(2, 3, 6), torch.randn(2, 3, 6)
    with torch.no_grad():
        expected = sae.decode(sae.encode(a_cf)) + a - sae.decode(sae.encode(a))
    assert torch.allclose(sae_edit(sae, a, a_cf, budget=None), expected, atol=1e-5)


def test_edited_code_changes_exactly_the_budget_of_most_changed_features():
    from ioi_supervised import edited_code

    z = torch.zeros(2, 2, 3)
    z_cf = z.clone()
    z_cf[0, 1, 2], z_cf[0, 0, 0], z_cf[1, 0, 1] = 5.0, 1.0, -2.0
    one = edited_code(z, z_cf, 1)
    assert one[0, 1, 2] == 5.0 and one[0, 0, 0] == 0.0 and one[1, 0, 1] == -2.0
    assert torch.equal(edited_code(z, z_cf, 2), z_cf)


@pytest.mark.embedded
def test_ioi_saes_quick_end_to_end(tmp_path):
    import ioi_saes

    out = tmp_path / "out"
    result = ioi_saes.main(["--quick", "--out", str(out), "--work", str(tmp_path / "work")])
    md = (out / "ioi_saes.md").read_text()

    header, rows = table(md, "| template | order |")
    assert all(float(r[3]) >= 0.9 for r in rows), rows  # the embedded model does IOI

    for errors in ("error terms mean-ablated", "error terms kept"):
        header, rows = table(section(md, f"## Faithfulness, {errors}"), "| SAEs | ranking |")
        assert header == ["SAEs", "ranking", "n=0", "n=10", "n=all"]
        assert {(r[0], r[1]) for r in rows} == {
            (a, k) for a in ("topk", "mp") for k in ("counterfactual", "mean_ablation")
        }
        for r in rows:
            cells = [mean_spread(c)[0] for c in r[2:]]
            if errors == "error terms mean-ablated":
                assert cells[0] == pytest.approx(0.0, abs=1e-6)  # no feature and no error term: the empty circuit
            else:
                assert cells[2] == pytest.approx(1.0, abs=0.01)  # every feature and every error term: the model

    header, rows = table(md, "| layer | dictionary | FVU |")
    assert [r[1] for r in rows] == ["supervised", "topk", "mp"]
    assert all(math.isfinite(mean_spread(c)[0]) for r in rows for c in r[2:])

    header, rows = table(md, "| edit | layer | SAEs |")
    assert header[3:] == ["supervised (2 features)", "SAE, 1 feat.", "SAE, all feat."]
    assert {r[0] for r in rows} == {"IO", "S"} and all(mean_spread(c) for r in rows for c in r[3:])

    header, rows = table(md, "| attribute | layer |")
    assert "ORDER" in {r[0] for r in rows}
    for r in rows:
        assert all(0 <= mean_spread(c)[0] <= 1 for c in r[2:])

    saved = json.loads((out / "results.json").read_text())
    assert saved["faithfulness"] == result["faithfulness"] and {r["seed"] for r in saved["control"]} == {0, 1}
    for name in ("faithfulness", "control"):
        assert "Plotly.newPlot" in (out / f"{name}.html").read_text()


def test_other_value_never_repeats_a_prompt_name():
    from ioi_data import other_value, sample

    rng = random.Random(0)
    for p in sample(0, 50, seed=3):
        assert other_value("io", p, rng) not in (p.io, p.s)
        assert other_value("order", p, rng) != p.order
