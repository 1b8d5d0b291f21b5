"""SAELens's eval definitions (``saelens_*`` metrics) against an independent computation: every non-special
position spliced (norm outliers too), every position zero-ablated, CE averaged over the predictions made at
non-special positions, KL over every non-special position (the last included), special = the tokenizer's
BOS/EOS/pad/SEP. sae-lab's own metrics stay as they were beside them."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from eval_helpers import HOOK_Z, RESID, contexts, eval_cfg, identity_sae, one_thread, sae  # noqa: F401
from sae_lab.activations.masks import keep_mask
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import special_token_mask
from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation.evaluate import evaluate_targets
from sae_lab.evaluation.saelens_defs import saelens_special_ids
from sae_lab.saeref import SAERef


def _ignored(tokens: np.ndarray, tok) -> torch.Tensor:
    """SAELens's ignored positions, spelled out: BOS, EOS, pad and SEP."""
    ids = [tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.sep_token_id]
    return torch.from_numpy(np.isin(tokens, [i for i in ids if i is not None]))


@torch.no_grad()
def _logits(model, tokens: np.ndarray, hook: str, value: torch.Tensor | None, where: torch.Tensor) -> torch.Tensor:
    """Full forwards with ``value`` [n, T, d] (None: clean) written at ``hook`` where ``where`` [n, T] holds."""

    def fn(act, hook=None):
        flat = act.reshape(*where.shape, -1)
        return torch.where(where[..., None], value.to(act.dtype), flat).reshape(act.shape)

    ids = torch.as_tensor(tokens, dtype=torch.long)
    fwd = [] if value is None else [(hook, fn)]
    return model.bridge.run_with_hooks(ids, fwd_hooks=fwd).double()


def _want(model, tokens: np.ndarray, hook: str, s) -> dict:
    """SAELens's metrics computed directly from full forwards (``sae_lens.evals.get_recons_loss`` and friends)."""
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(torch.as_tensor(tokens, dtype=torch.long), names_filter=[hook])
        acts = cache[hook].reshape(*tokens.shape, -1).float()
        x_hat = s(acts)
    use = ~_ignored(tokens, model.tokenizer)
    everywhere = torch.ones_like(use)
    clean = _logits(model, tokens, hook, None, use)
    spliced = _logits(model, tokens, hook, x_hat, use)
    zeroed = _logits(model, tokens, hook, torch.zeros_like(acts), everywhere)
    targets = torch.as_tensor(tokens[:, 1:], dtype=torch.long)

    def ce(lg):
        per = Fn.cross_entropy(lg[:, :-1].transpose(1, 2), targets, reduction="none")
        return per[use[:, :-1]].mean().item()

    def kl(lg):
        p = torch.log_softmax(clean, -1)
        return (p.exp() * (p - torch.log_softmax(lg, -1))).sum(-1)[use].mean().item()

    x, xh = acts[use].double(), x_hat[use].double()
    w = {
        "saelens_ce_loss_without_sae": ce(clean),
        "saelens_ce_loss_with_sae": ce(spliced),
        "saelens_ce_loss_with_ablation": ce(zeroed),
        "saelens_kl_div_with_sae": kl(spliced),
        "saelens_kl_div_with_ablation": kl(zeroed),
        "saelens_explained_variance": 1 - (((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()).item(),
        "saelens_mse": ((x - xh) ** 2).sum(1).mean().item(),
        "saelens_cossim": Fn.cosine_similarity(x, xh).mean().item(),
        "saelens_l0": (s.encode(acts[use]) != 0).sum(1).double().mean().item(),
    }
    w["saelens_ce_loss_score"] = (w["saelens_ce_loss_with_ablation"] - w["saelens_ce_loss_with_sae"]) / (
        w["saelens_ce_loss_with_ablation"] - w["saelens_ce_loss_without_sae"]
    )
    w["saelens_kl_div_score"] = 1 - w["saelens_kl_div_with_sae"] / w["saelens_kl_div_with_ablation"]
    return w, use, acts


def _ours(model, tokens: np.ndarray, acts: torch.Tensor, multiple: float, first: int) -> torch.Tensor:
    """sae-lab's kept positions: not BOS/EOS/pad, ||x|| <= multiple x the median of the first batch's."""
    special = special_token_mask(tokens, model.tokenizer)
    threshold = multiple * float(acts[:first].norm(dim=-1)[torch.from_numpy(~special[:first])].median())
    return keep_mask(acts, special, threshold)


def test_saelens_special_ids_are_bos_eos_pad_and_sep(tiny_model):
    import copy

    tok = copy.deepcopy(tiny_model.tokenizer)
    assert saelens_special_ids(tok) == sorted({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id})
    tok.sep_token = "<unk>"  # a SEP token is ignored too; other special tokens (unk) are not
    assert saelens_special_ids(tok) == sorted({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.unk_token_id})


@pytest.mark.parametrize("hook", [RESID, HOOK_Z])
def test_saelens_metrics_splice_outliers_and_zero_every_position(tiny_model, hook):
    """With outliers excluded from sae-lab's metrics (1.3 x the median norm), SAELens's still splice them, zero
    BOS/EOS/pad too, and average over its own positions."""
    s = sae("topk", hook, 64, 128, seed=1)
    multiple = 1.3
    cfg = eval_cfg(192).model_copy(update={"exclude_outliers": multiple})
    m = evaluate_targets([SAERef("s", s, None)], tiny_model, cfg, multiple)["s"]["metrics"]

    tokens = contexts(tiny_model, cfg)
    want, use, acts = _want(tiny_model, tokens, hook, s)
    for key, value in want.items():
        assert m[key] == pytest.approx(value, rel=1e-4, abs=1e-7), key
    assert m["saelens_tokens"] == int(use.sum()) and m["saelens_predictions"] == int(use[:, :-1].sum())

    # the case is the one that matters: outliers among SAELens's positions, specials that SAELens zeroes
    assert (use & ~_ours(tiny_model, tokens, acts, multiple, cfg.batch_size)).any() and (~use).any()
    assert m["tokens"] < m["saelens_tokens"]
    assert m["saelens_ce_loss_with_ablation"] != pytest.approx(m["ce_zero_ablation"], rel=1e-6)
    assert m["saelens_kl_div_with_sae"] != pytest.approx(m["kl_sae"], rel=1e-6)


def test_a_perfect_reconstruction_scores_one_under_both_definitions(tiny_model):
    m = evaluate_targets([SAERef("i", identity_sae(64, RESID), None)], tiny_model, eval_cfg(192))["i"]["metrics"]
    assert m["saelens_ce_loss_with_sae"] == m["saelens_ce_loss_without_sae"] and m["saelens_kl_div_with_sae"] == 0
    assert m["saelens_ce_loss_score"] == 1.0 and m["saelens_kl_div_score"] == 1.0
    assert m["saelens_explained_variance"] == 1.0 and m["loss_recovered_zero"] == 1.0


def test_the_eval_table_shows_both_definitions(tiny_model):
    from sae_lab.pipeline import format_eval_table

    m = evaluate_targets([SAERef("s", sae("topk", RESID, 64, 128, seed=2), None)], tiny_model, eval_cfg(96))["s"]
    lines = format_eval_table({"saes": {"s": m["metrics"]}}).splitlines()
    header, row = lines[0].split(), lines[1].split()
    assert "rec(0)" in header and "SL" in header and "SAELens's" in "\n".join(lines[2:])
    cells = dict(zip(["sae", "FVU", "L0", "train", "dead", "CE0", "CEmean", "KL", "SLCE", "SLKLscore", "SLKL"], row))
    assert cells["CE0"] == f"{m['metrics']['loss_recovered_zero']:.3f}"
    assert cells["SLCE"] == f"{m['metrics']['saelens_ce_loss_score']:.3f}"
    assert cells["SLKL"] == f"{m['metrics']['saelens_kl_div_with_sae']:.4f}"


@pytest.mark.embedded
def test_saelens_metrics_on_the_embedded_model(embedded_model):
    """SmolLM2's layer-15 residual; sae-lab's metrics exclude positions above 1.1 x the median norm (at 10 x, 256
    tokens hold no outlier besides BOS), SAELens's splice them."""
    m = embedded_model
    hook = "blocks.15.hook_resid_post"
    data = DataConfig(split="validation", context_length=128)
    s = sae("topk", hook, 576, 1152, seed=1, k=16)
    with torch.no_grad():
        s.W_dec.mul_(10.0)  # reconstructions of the residual's scale, so the splice is not a zero-ablation
    cfg = EvalConfig(data=data, n_tokens=256, batch_size=2, exclude_outliers=1.1)
    got = evaluate_targets([SAERef("e", s, None)], m, cfg, 1.1)["e"]["metrics"]
    tokens = contexts(m, cfg)
    want, use, acts = _want(m, tokens, hook, s)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert (use & ~_ours(m, tokens, acts, 1.1, cfg.batch_size)).any()  # outliers that only SAELens splices
    # a bias-free Llama whose residual is zero at every position stays zero: uniform logits, CE = ln(vocab)
    vocab = m.bridge.cfg.d_vocab
    assert got["saelens_ce_loss_with_ablation"] == pytest.approx(math.log(vocab), rel=1e-6)
    assert got["ce_zero_ablation"] != pytest.approx(got["saelens_ce_loss_with_ablation"], rel=1e-3)  # another baseline
    assert 2.0 < got["saelens_ce_loss_without_sae"] < 6.0
