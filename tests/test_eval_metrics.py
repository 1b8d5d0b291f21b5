"""Faithfulness metrics against direct computations on the tiny model; splicing; bad input; file outputs."""

import json

import pytest
import torch
import torch.nn.functional as Fn
from safetensors.torch import save_file

from eval_helpers import HOOK_Z, RESID, T, brute_acts, contexts, eval_cfg, identity_sae, make_run, one_thread, sae  # noqa: F401
from sae_lab.circuits import run_with_sae
from sae_lab.evaluation import SAEMismatchError, evaluate_run, evaluate_sae_dir
from sae_lab.evaluation.evaluate import evaluate_targets
from sae_lab.evaluation.metrics import loss_recovered
from sae_lab.saeref import SAERef


def _spliced_ce(model, tokens, hook, value, keep, clean_logp):
    """CE and KL with ``value`` [n, T, d] written at ``hook`` on kept positions: an independent hook."""
    ces, kls = [], []
    for i, row in enumerate(tokens):

        def fn(act, hook=None, i=i):
            flat = act.reshape(1, T, -1)
            new = torch.where(keep[i][None, :, None], value[i][None].to(act.dtype), flat)
            return new.reshape(act.shape)

        with torch.no_grad():
            lg = model.bridge.run_with_hooks(torch.as_tensor(row[None], dtype=torch.long), fwd_hooks=[(hook, fn)])[0]
        ids = torch.as_tensor(row[1:], dtype=torch.long)
        ces.append(Fn.cross_entropy(lg[:-1].double(), ids, reduction="none"))
        logq = torch.log_softmax(lg[:-1].double(), -1)
        kls.append((clean_logp[i].exp() * (clean_logp[i] - logq)).sum(-1))
    return torch.cat(ces).mean().item(), torch.cat(kls).mean().item()


@pytest.mark.parametrize("arch,hook", [("topk", RESID), ("mutual_choice", HOOK_Z)])
def test_every_metric_matches_a_direct_computation(tiny_model, arch, hook):
    d_in = 64
    s = sae(arch, hook, d_in, 128, seed=1)
    if arch == "mutual_choice":  # inference rule: a global threshold (not the batch-level training rule)
        s.threshold.fill_(0.05)
    cfg = eval_cfg(192, dense_threshold=0.05)
    m = evaluate_targets([SAERef("s", s, None)], tiny_model, cfg)["s"]["metrics"]

    tokens = contexts(tiny_model, cfg)
    logits, acts, keep = brute_acts(tiny_model, tokens, hook)
    x = acts[keep].double()
    with torch.no_grad():
        z = s.encode(acts[keep]).double()
        xh_all = s(acts)
    xh = xh_all[keep].double()
    n = x.shape[0]
    l0 = (z != 0).sum(1).double()
    density = (z != 0).double().mean(0)
    want = {
        "mse": ((x - xh) ** 2).mean().item(),
        "fvu": (((x - xh) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()).item(),
        "l0_mean": l0.mean().item(),
        "l0_std": l0.std(unbiased=False).item(),
        "l1": z.abs().sum(1).mean().item(),
        "dead_fraction": (density == 0).double().mean().item(),
        "dense_fraction": (density > 0.05).double().mean().item(),
        "cos": Fn.cosine_similarity(x, xh, dim=1).mean().item(),
        "norm_ratio": (xh.norm(dim=1) / x.norm(dim=1)).mean().item(),
        "tokens": n,
    }
    if arch == "mutual_choice":
        assert torch.equal(z != 0, acts[keep] @ s.W_enc + s.b_enc - s.b_dec @ s.W_enc > 0.05)  # JumpReLU at 0.05
    clean_logp = torch.log_softmax(logits[:, :-1].double(), -1)
    ids = torch.as_tensor(tokens[:, 1:], dtype=torch.long)
    want["ce_clean"] = Fn.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).double(), ids.reshape(-1)).item()
    want["ce_sae"], want["kl_sae"] = _spliced_ce(tiny_model, tokens, hook, xh_all, keep, clean_logp)
    zero = torch.zeros_like(acts)
    want["ce_zero_ablation"], want["kl_zero_ablation"] = _spliced_ce(tiny_model, tokens, hook, zero, keep, clean_logp)
    mean = acts[keep].mean(0).expand_as(acts)
    want["ce_mean_ablation"], want["kl_mean_ablation"] = _spliced_ce(tiny_model, tokens, hook, mean, keep, clean_logp)
    want["loss_recovered_zero"] = (want["ce_zero_ablation"] - want["ce_sae"]) / (
        want["ce_zero_ablation"] - want["ce_clean"]
    )
    want["loss_recovered_mean"] = (want["ce_mean_ablation"] - want["ce_sae"]) / (
        want["ce_mean_ablation"] - want["ce_clean"]
    )
    for key, value in want.items():
        assert m[key] == pytest.approx(value, rel=2e-4, abs=1e-6), key
    assert m["predictions"] == tokens.shape[0] * (T - 1)


def test_a_perfect_reconstruction_gives_exactly_the_clean_loss(tiny_model):
    ident = identity_sae(64, RESID)
    noisy = identity_sae(64, RESID)
    with torch.no_grad():
        noisy.W_dec.mul_(1.05)  # same code, 5% too long: must cost something
    out = evaluate_targets([SAERef("ident", ident, None), SAERef("noisy", noisy, None)], tiny_model, eval_cfg(192))
    m, bad = out["ident"]["metrics"], out["noisy"]["metrics"]
    assert m["ce_sae"] == m["ce_clean"] and m["kl_sae"] == 0.0
    assert m["mse"] == 0.0 and m["fvu"] == 0.0 and m["cos"] == pytest.approx(1.0)
    assert m["loss_recovered_zero"] == 1.0 and m["loss_recovered_mean"] == 1.0
    assert bad["ce_sae"] != bad["ce_clean"] and bad["kl_sae"] > 0 and bad["fvu"] > 0
    assert bad["norm_ratio"] == pytest.approx(1.05, rel=1e-5) and m["norm_ratio"] == pytest.approx(1.0, rel=1e-6)
    assert bad["ce_zero_ablation"] == m["ce_zero_ablation"]  # ablations are shared per hook


def test_loss_recovered_formula():
    assert loss_recovered(2.0, 2.5, 4.0) == pytest.approx(0.75)
    assert loss_recovered(2.0, 2.0, 4.0) == 1.0 and loss_recovered(2.0, 4.0, 4.0) == 0.0


def test_splice_on_hook_z_reshapes_per_head_activations(tiny_model):
    ids = torch.as_tensor(contexts(tiny_model, eval_cfg(64))[:2], dtype=torch.long)
    with torch.no_grad():
        clean = tiny_model.bridge(ids)
        same = run_with_sae(tiny_model, ids, identity_sae(64, HOOK_Z))
        zeroed = run_with_sae(tiny_model, ids, identity_sae(64, HOOK_Z), mode="zero")
        o_proj = tiny_model.bridge.original_model.model.layers[2].self_attn.o_proj
        handle = o_proj.register_forward_pre_hook(lambda mod, args: (torch.zeros_like(args[0]),))
        try:
            want = tiny_model.bridge.original_model(ids).logits
        finally:
            handle.remove()
    assert torch.equal(same, clean)
    assert torch.allclose(zeroed, want, atol=1e-5) and not torch.allclose(zeroed, clean, atol=1e-3)


def test_evaluate_run_writes_eval_json_with_the_data_spec(tiny_model, tmp_path):
    run = make_run(tmp_path / "run", [sae("topk", RESID, name="a"), sae("topk", HOOK_Z, name="b")])
    summary = evaluate_run(run, eval_cfg(100), model=tiny_model)
    rec = json.loads((run / "saes" / "a" / "eval.json").read_text())
    assert json.loads((run / "eval.json").read_text()) == summary and set(summary["saes"]) == {"a", "b"}
    assert rec["eval_data"]["n_tokens"] == 4 * T and rec["eval_data"]["n_contexts"] == 4  # 100 tokens -> 4 contexts
    assert rec["eval_data"]["data"]["split"] == "validation" and rec["hook_name"] == RESID
    assert rec["metrics"]["tokens"] == rec["eval_data"]["tokens_used"]["a"] < 4 * T  # BOS/EOS masked out
    assert summary["saes"]["b"]["l0_mean"] == pytest.approx(6.0)


def test_a_mismatched_sae_is_refused_naming_hook_and_width(tiny_model, tmp_path):
    with pytest.raises(SAEMismatchError, match=r"blocks\.9\.hook_resid_post.*tiny-llama"):
        evaluate_targets([SAERef("x", sae("topk", "blocks.9.hook_resid_post"), tmp_path)], tiny_model, eval_cfg())
    with pytest.raises(SAEMismatchError, match=r"d_in=32.*blocks\.1\.hook_resid_post.*width 64"):
        evaluate_targets([SAERef("x", sae("topk", RESID, d_in=32), tmp_path)], tiny_model, eval_cfg())


def test_a_saelens_format_directory_is_evaluated(tiny_model, tmp_path):
    """A hand-written SAELens TopK directory (cfg.json + sae_weights.safetensors), as downloaded from the Hub."""
    ref = sae("topk", RESID, seed=3)
    d = tmp_path / "pretrained"
    d.mkdir()
    save_file(
        {k: getattr(ref, k).detach().contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")},
        str(d / "sae_weights.safetensors"),
    )
    (d / "cfg.json").write_text(
        json.dumps(
            {
                "architecture": "topk",
                "d_in": 64,
                "d_sae": 128,
                "k": 6,
                "hook_name": RESID,
                "model_name": "tiny",
                "apply_b_dec_to_input": True,
            }
        )
    )
    rec = evaluate_sae_dir(d, tiny_model, eval_cfg(96))
    want = evaluate_targets([SAERef("ref", ref, None)], tiny_model, eval_cfg(96))["ref"]["metrics"]
    assert json.loads((d / "eval.json").read_text())["metrics"] == rec["metrics"]
    assert rec["metrics"]["fvu"] == pytest.approx(want["fvu"]) and rec["metrics"]["ce_sae"] == pytest.approx(
        want["ce_sae"]
    )
