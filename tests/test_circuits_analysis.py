"""Attribution and direct feature attribution on a tiny model, against exact computations (edges:
test_circuits_edges.py)."""

import pytest
import torch

from circuit_helpers import HOOK_Z, RESID1, RESID2, dense_sae
from eval_helpers import one_thread  # noqa: F401
from eval_helpers import sae as make_sae
from sae_lab.circuits import Spliced, logit_diff
from sae_lab.circuits.attribution import patch_effect, validate
from sae_lab.circuits.dfa import direct_feature_attribution

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
        assert d.by_head_source[:, d.position + 1 :].abs().sum() == 0  # causal: no later sources
        assert d.by_head.shape == (4,) and d.by_head_source.abs().sum() > 0
