"""Metrics and feature statistics on the real embedded model (SmolLM2-135M), against direct computations."""

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts, special_token_mask
from sae_lab.evaluation import AnalyzeConfig, EvalConfig, FeatureDB
from sae_lab.evaluation.analyze import analyze_targets
from sae_lab.evaluation.evaluate import evaluate_targets
from sae_lab.saeref import SAERef
from sae_lab.saes import SAEConfig, build_sae

pytestmark = pytest.mark.embedded
HOOK = "blocks.3.hook_resid_post"


def _sae(model, tokens):
    torch.manual_seed(0)
    s = build_sae(SAEConfig(architecture="topk", d_in=model.d_model, d_sae=1152, k=16, hook_name=HOOK, name="e")).eval()
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(
            torch.as_tensor(tokens[:2], dtype=torch.long), names_filter=[HOOK], stop_at_layer=4
        )
        s.init_b_dec(cache[HOOK][:, 1:].reshape(-1, model.d_model), "mean")
    return s


def test_metrics_and_top_examples_on_the_embedded_model(embedded_model, tmp_path):
    m = embedded_model
    data = DataConfig(split="validation", context_length=128)
    tokens = np.stack(list(iter_contexts(data, m.tokenizer))[:16])
    s = _sae(m, tokens)
    cfg = EvalConfig(data=data, n_tokens=512, batch_size=4, exclude_outliers="none")
    got = evaluate_targets([SAERef("e", s, tmp_path)], m, cfg)["e"]["metrics"]

    ids = torch.as_tensor(tokens[:4], dtype=torch.long)
    keep = torch.from_numpy(~special_token_mask(tokens[:4], m.tokenizer))
    with torch.no_grad():
        logits, cache = m.bridge.run_with_cache(ids, names_filter=[HOOK])
        x = cache[HOOK].float()
        xh = s(x)
        spliced = m.bridge.run_with_hooks(ids, fwd_hooks=[(HOOK, lambda a, hook: torch.where(keep[..., None], xh, a))])
    ce = lambda lg: Fn.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]).double(), ids[:, 1:].reshape(-1)).item()  # noqa: E731
    xk, hk = x[keep].double(), xh[keep].double()
    assert got["ce_clean"] == pytest.approx(ce(logits), rel=1e-4) and got["ce_sae"] == pytest.approx(
        ce(spliced), rel=1e-4
    )
    assert got["fvu"] == pytest.approx((((xk - hk) ** 2).sum() / ((xk - xk.mean(0)) ** 2).sum()).item(), rel=1e-4)
    assert got["l0_mean"] == pytest.approx(16.0) and got["tokens"] == int(keep.sum())
    assert got["ce_clean"] < got["ce_sae"] and 2.0 < got["ce_clean"] < 6.0  # a real language model on English text

    acfg = AnalyzeConfig(data=data, n_tokens=2048, batch_size=8, exclude_outliers="none", checkpoint_every_tokens=10**9)
    out = analyze_targets([SAERef("e", s, tmp_path / "e")], m, acfg, None, tmp_path / "ckpt.safetensors")
    with torch.no_grad():
        _, cache = m.bridge.run_with_cache(
            torch.as_tensor(tokens, dtype=torch.long), names_filter=[HOOK], stop_at_layer=4
        )
        z = s.encode(cache[HOOK].float()) * torch.from_numpy(~special_token_mask(tokens, m.tokenizer))[..., None]
    z = z.reshape(-1, z.shape[-1])
    with FeatureDB(out["databases"]["e"]) as db:
        for f in (z > 0).sum(0).topk(5).indices.tolist():
            page = db.feature_page(f)
            assert [e["value"] for e in page["top_examples"]] == pytest.approx(
                z[:, f].topk(20).values.tolist(), rel=1e-4
            )
            assert page["n_active"] == int((z[:, f] > 0).sum())
        assert db.summary()["analysis_data"]["n_tokens"] == 2048
