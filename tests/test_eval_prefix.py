"""`sae-lab eval` shares the forward up to the first hooked block across clean, spliced and ablated runs: the
metrics are identical to running every variant from the tokens."""

import numpy as np
import pytest
import torch

from eval_helpers import HOOK_Z, RESID, eval_cfg, sae  # noqa: F401
from sae_lab.data.config import DataConfig
from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation import evaluate as E
from sae_lab.evaluation.inputs import Target
from sae_lab.hooknames import parse_hook
from sae_lab.saes import SAEConfig, build_sae


def _both(model, targets, cfg, monkeypatch):
    """(metrics with prefix sharing, metrics with every forward from the tokens)."""
    starts = []
    init = E._SharedPrefix.__init__

    def spy(self, *a):
        init(self, *a)
        starts.append(self.kwargs.get("start_at_layer"))

    with monkeypatch.context() as m:
        m.setattr(E._SharedPrefix, "__init__", spy)
        shared = E.evaluate_targets(targets, model, cfg)
    assert starts and set(starts) == {min(parse_hook(t.hook).layer for t in targets)}  # the shared path ran
    with monkeypatch.context() as m:
        m.setattr(E, "start_layer", lambda hooks: None)  # no shared block: every forward from the tokens
        full = E.evaluate_targets(targets, model, cfg)
    return {n: r["metrics"] for n, r in shared.items()}, {n: r["metrics"] for n, r in full.items()}


def test_prefix_sharing_gives_identical_metrics_on_the_tiny_model(tiny_model, monkeypatch):
    targets = [Target("resid", sae("topk", RESID, 64, 128, seed=1), None),
               Target("z", sae("topk", HOOK_Z, 64, 128, seed=2), None)]  # hooks in different blocks
    shared, full = _both(tiny_model, targets, eval_cfg(192), monkeypatch)
    assert shared == full and shared["resid"]["ce_sae"] != shared["z"]["ce_sae"]


@pytest.mark.embedded
def test_prefix_sharing_gives_identical_metrics_on_the_embedded_model(embedded_model, monkeypatch):
    hook = "blocks.15.hook_resid_post"
    torch.manual_seed(0)
    s = build_sae(SAEConfig(architecture="topk", d_in=576, d_sae=1152, k=16, hook_name=hook, name="e")).eval()
    cfg = EvalConfig(data=DataConfig(split="validation", context_length=128), n_tokens=512, batch_size=4,
                     exclude_outliers=10.0)
    shared, full = _both(embedded_model, [Target("e", s, None)], cfg, monkeypatch)
    assert shared["e"] == full["e"] and np.isfinite(shared["e"]["ce_sae"])
