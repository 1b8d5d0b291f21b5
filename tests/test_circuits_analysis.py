"""Attribution, direct feature attribution and edges on a tiny model, against exact computations."""

import json

import pytest
import torch

from circuit_helpers import HOOK_Z, RESID1, RESID2, dense_sae
from eval_helpers import one_thread  # noqa: F401
from eval_helpers import sae as make_sae
from sae_lab.circuits import Spliced, logit_diff
from sae_lab.circuits.attribution import patch_effect, validate
from sae_lab.circuits.dfa import direct_feature_attribution
from sae_lab.circuits.edges import edges

CLEAN, CORRUPT = "the value of the function is not a list", "the list of the function is not a value"
METRIC = logit_diff(" value", " list")


def test_attribution_equals_exact_patching_when_the_metric_is_linear(tiny_model):
    """At unembed.hook_in the logits are linear in the code and error term: estimates are exact."""
    sae = dense_sae("unembed.hook_in")
    with Spliced(tiny_model, [sae]) as s:
        attr = s.attribute(CLEAN, CORRUPT, METRIC)
        nodes = attr.top(12)
        exact = patch_effect(s, CLEAN, CORRUPT, METRIC, nodes)
        ig = s.attribute(CLEAN, CORRUPT, METRIC, method="ig", steps=3)
    assert any(nd["feature"] == "error" for nd in nodes) and abs(nodes[0]["estimate"]) > 1e-3
    assert [nd["estimate"] for nd in nodes] == pytest.approx(exact, abs=1e-4)
    assert torch.allclose(ig.features[sae.name], attr.features[sae.name], atol=1e-5)
    total = sum(v.sum() for v in attr.features.values()) + sum(v.sum() for v in attr.errors.values())
    assert float(total) == pytest.approx(attr.metric_corrupt - attr.metric_clean, abs=1e-4)  # complete when linear


def test_attribution_over_several_hooks_is_validated_by_patching(tiny_model):
    saes = [dense_sae(RESID1), dense_sae(HOOK_Z, seed=1), dense_sae(RESID2, seed=2)]
    with Spliced(tiny_model, saes) as s:
        attr = s.attribute(CLEAN, CORRUPT, METRIC)
        summed = s.attribute(CLEAN, CORRUPT, METRIC, per_position=False)
        ig = s.attribute(CLEAN, CORRUPT, METRIC, method="ig", steps=8)
        v_atp, v_ig = validate(s, CLEAN, CORRUPT, METRIC, attr, n=15), validate(s, CLEAN, CORRUPT, METRIC, ig, n=15)
    for k in attr.features:
        assert torch.allclose(summed.features[k], attr.features[k].sum(0), atol=1e-6)
    assert v_atp["pearson"] > 0.5 and v_ig["pearson"] > 0.5  # a random tiny model is mildly nonlinear


def test_direct_feature_attribution_sums_to_the_pre_activation(tiny_model):
    sae = make_sae("topk", HOOK_Z, 64, 128, seed=3)
    for f, pos in [(5, 6), (77, -1), (0, 0)]:
        d = direct_feature_attribution(tiny_model, sae, CLEAN, f, position=pos)
        assert float(d.by_head_source.sum()) + d.bias == pytest.approx(d.pre_activation, abs=1e-5)
        assert d.by_head_source.shape == (4, len(d.tokens))
        assert d.by_head_source[:, d.position + 1:].abs().sum() == 0  # causal: no later sources
        assert d.by_head.shape == (4,) and d.by_head_source.abs().sum() > 0


def test_edges_agree_with_finite_differences(tiny_model, tmp_path):
    up, mid, down = dense_sae(RESID1, name="up"), dense_sae(HOOK_Z, seed=1, name="mid"), dense_sae(RESID2, seed=2,
                                                                                                   name="down")
    with Spliced(tiny_model, [up, mid, down]) as s:
        g = edges(s, CLEAN, up, down, n_down=2, n_up=3)
        held = s.run(CLEAN).errors["mid"].clone()
        for e in g.edges[:4]:
            u, d = int(e["source"].split("/")[1]), int(e["target"].split("/")[1])
            fd = (_total(s, u, d, 1e-3, held) - _total(s, u, d, -1e-3, held)) / 2e-3
            assert e["weight"] == pytest.approx(fd, rel=2e-2, abs=2e-4)
    assert json.loads(g.to_json(tmp_path / "g.json"))["edges"] == g.edges and len(g.nodes) >= 3
    assert "plotly" in g.to_html(tmp_path / "g.html").read_text().lower()


def _total(s, u: int, d: int, eps: float, held_error: torch.Tensor) -> float:
    """sum_t z_down[t, d] when upstream feature u is scaled by (1 + eps), the middle error term held fixed."""
    def scale(z, hook):
        z = z.clone()
        z[..., u] *= 1 + eps
        return z

    s.nodes["mid"].fixed_error = held_error[None]
    try:
        with torch.no_grad():
            out = s.run(CLEAN, fwd_hooks=[("blocks.1.hook_resid_post.hook_sae_acts", scale)])
    finally:
        s.nodes["mid"].fixed_error = None
    return float(out.features["down"][:, d].double().sum())
