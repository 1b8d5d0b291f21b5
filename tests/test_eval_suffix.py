"""`sae-lab eval` runs each variant (clean, spliced SAEs, ablations) only from its hook's block on, from the
inputs the clean forward recorded. The metrics must be identical (==, not approximately) to full forwards from
the tokens: residual, mid-block, MLP-out and attention hook_z SAEs at several layers, the last layer, and a hook
outside the blocks (full forwards); a failed first-batch check falls back to full forwards; a padded batch's
attention mask is carried."""

import logging

import numpy as np
import pytest
import torch

from eval_helpers import HOOK_Z, RESID, eval_cfg, one_thread, sae  # noqa: F401
from sae_lab.circuits.forward_hooks import ablation_hooks
from sae_lab.data.config import DataConfig
from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation import evaluate as E
from sae_lab.evaluation.suffix_forward import SharedForward
from sae_lab.saeref import SAERef


def _eval(model, targets, cfg, monkeypatch, share: bool):
    """(metrics per SAE, the SharedForward's counts of variant forwards) with or without sharing."""
    made = []

    def factory(bridge, hooks):
        made.append(SharedForward(bridge, hooks, share=share))
        return made[-1]

    with monkeypatch.context() as m:
        m.setattr(E, "SharedForward", factory)
        out = E.evaluate_targets(targets, model, cfg)
    return {n: r["metrics"] for n, r in out.items()}, made[0].counts


def _tiny_targets():
    hooks = [
        RESID,
        HOOK_Z,
        "blocks.3.hook_resid_post",
        "blocks.0.hook_mlp_out",
        "blocks.2.hook_resid_mid",
        "hook_embed",
    ]  # last layer (no next block), mid-block, outside the blocks
    return [SAERef(f"s{i}", sae("topk", h, 64, 128, seed=i), None) for i, h in enumerate(hooks)]


def test_eval_from_the_hooks_block_gives_identical_metrics(tiny_model, monkeypatch):
    targets = _tiny_targets()
    shared, counts = _eval(tiny_model, targets, eval_cfg(192), monkeypatch, share=True)
    full, full_counts = _eval(tiny_model, targets, eval_cfg(192), monkeypatch, share=False)
    assert shared == full
    assert len({m["ce_sae"] for m in shared.values()}) == len(targets)  # every splice changes the logits
    # per batch: 5 in-block SAEs + 2 ablations of each of their hooks from the block, hook_embed's 3 in full
    assert counts["full"] > 0 and counts["from_block"] == 5 * counts["full"] and full_counts["from_block"] == 0


def test_a_failed_first_batch_check_falls_back_to_full_forwards(tiny_model, monkeypatch, caplog):
    targets = _tiny_targets()[:2]
    full, _ = _eval(tiny_model, targets, eval_cfg(96), monkeypatch, share=False)
    wrong = SharedForward.from_block
    monkeypatch.setattr(SharedForward, "from_block", lambda self, *a: wrong(self, *a) + 1e-3)
    with caplog.at_level(logging.WARNING, logger="sae_lab.evaluation.suffix_forward"):
        got, counts = _eval(tiny_model, targets, eval_cfg(96), monkeypatch, share=True)
    assert "does not reproduce the model's logits" in caplog.text
    assert got == full and counts["from_block"] == 0


@torch.inference_mode()
def test_a_padded_batch_runs_from_the_block_with_its_attention_mask(tiny_model):
    b = tiny_model.bridge
    ids = torch.randint(4, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    ids[0, :5], mask[0, :5] = tiny_model.tokenizer.pad_token_id, 0  # left padding: positions and mask shift
    fwd = SharedForward(b, [RESID])
    clean, _ = fwd.clean(ids, [RESID], attention_mask=mask)
    assert torch.equal(clean, b(ids, attention_mask=mask)) and not torch.equal(clean, b(ids))
    hooks = ablation_hooks(RESID, "mean", torch.full((64,), 0.5))
    assert torch.equal(fwd.logits(RESID, hooks), b.run_with_hooks(ids, fwd_hooks=hooks, attention_mask=mask))
    assert fwd.counts == {"from_block": 1, "full": 0}


@pytest.mark.embedded
def test_eval_from_the_hooks_block_on_the_embedded_model(embedded_model, monkeypatch):
    m = embedded_model
    targets = [
        SAERef("resid", sae("topk", "blocks.15.hook_resid_post", 576, 1152, seed=1, k=16), None),
        SAERef("z", sae("topk", "blocks.20.attn.hook_z", 576, 1152, seed=2, k=16), None),
    ]
    cfg = EvalConfig(
        data=DataConfig(split="validation", context_length=128), n_tokens=256, batch_size=2, exclude_outliers=10.0
    )
    shared, counts = _eval(m, targets, cfg, monkeypatch, share=True)
    full, _ = _eval(m, targets, cfg, monkeypatch, share=False)
    # 2 splices + 2 ablations of each hook, + SAELens's zero-ablation of each hook (every position), + SAELens's
    # splice of an SAE whose batch has a non-special outlier (it splices outliers too; otherwise reused)
    assert shared == full and counts["full"] == 0 and 8 <= counts["from_block"] <= 10
    assert all(np.isfinite(v["ce_sae"]) and v["ce_sae"] > v["ce_clean"] for v in shared.values())
