"""The circuit API on a tiny model: splice, features of a prompt, interventions, generation, bad input."""

import numpy as np
import pytest
import torch

from circuit_helpers import HOOK_Z, RESID1, RESID2, dense_sae
from eval_helpers import eval_cfg, one_thread  # noqa: F401
from eval_helpers import sae as make_sae
from sae_lab.circuits import CircuitError, Intervention, Spliced, compare_interventions, logit_diff, prompt_features
from sae_lab.evaluation.evaluate import evaluate_targets
from sae_lab.saeref import SAERef

PROMPT = "the value of the function is not a list"


@pytest.fixture(scope="module")
def saes():
    return {h: make_sae("topk", h, 64, 128, seed=i, name=f"t{i}") for i, h in enumerate([RESID1, RESID2, HOOK_Z])}


def test_error_term_reproduces_clean_logits_at_every_kind_of_hook(tiny_model, saes):
    ids = tiny_model.bridge.to_tokens(PROMPT)
    clean = tiny_model.bridge(ids)[0]
    with Spliced(tiny_model, list(saes.values())) as s:
        out = s.run(PROMPT, cache=True)
    assert (out.logits - clean).abs().max() < 1e-4
    for key, sae in zip(["t0", "t1", "t2"], saes.values()):
        assert out.features[key].shape == (ids.shape[1], 128) and out.errors[key].shape == (ids.shape[1], 64)
        assert torch.equal(out.cache[f"{sae.cfg.hook_name}.hook_sae_acts"], out.features[key])
    with Spliced(tiny_model, [saes[RESID1]], error_term=False) as s:  # off: the model runs on the reconstruction
        assert (s.run(PROMPT).logits - clean).abs().max() > 1e-3
    assert (tiny_model.bridge(ids)[0] - clean).abs().max() == 0  # closing the splice restores the model


def test_without_error_term_the_ce_equals_sae_lab_eval(tiny_model, saes, tmp_path):
    """`sae-lab eval`'s ce_sae (splice at the kept positions) equals Spliced(error_term=False) with that mask."""
    from sae_lab.data.packing import iter_contexts, special_token_mask
    from sae_lab.evaluation.metrics import next_token_ce

    sae = saes[RESID2]
    cfg = eval_cfg(n_tokens=96)
    got = evaluate_targets([SAERef("t1", sae, tmp_path)], tiny_model, cfg)["t1"]["metrics"]["ce_sae"]
    tokens = torch.tensor(np.stack([c for c, _ in zip(iter_contexts(cfg.data, tiny_model.tokenizer), range(3))]))
    keep = torch.from_numpy(~special_token_mask(tokens.numpy(), tiny_model.tokenizer))
    with Spliced(tiny_model, [sae], error_term=False) as s:
        logits = s.run(tokens, where=keep).logits
    assert next_token_ce(logits, tokens).mean().item() == pytest.approx(got, rel=1e-5)


def test_gradients_flow_only_when_asked(tiny_model, saes):
    with Spliced(tiny_model, [saes[RESID1]]) as s:
        plain = s.run(PROMPT)
        assert plain.logits.is_inference() and not plain.logits.requires_grad
        out = s.run(PROMPT, grad=True)
        node = s.node(saes[RESID1])  # the batched tensors of the graph (out.features holds views of them)
        g = torch.autograd.grad(out.logits[-1, 5], [node.z, node.err])
    assert g[0].abs().sum() > 0 and g[1].abs().sum() > 0


def test_prompt_features_match_the_code_of_the_cached_activation(tiny_model, saes):
    sae = saes[HOOK_Z]
    pf = prompt_features(tiny_model, sae, PROMPT, top_k=4, features=[3, 7])
    _, cache = tiny_model.bridge.run_with_cache(tiny_model.bridge.to_tokens(PROMPT), names_filter=[HOOK_Z])
    z = sae.encode(cache[HOOK_Z][0].reshape(len(pf.token_ids), -1))
    assert pf.tokens[1:4] == ["the", "value", "of"] and len(pf.tokens) == len(pf.token_ids) == z.shape[0]
    assert pf.acts[3] == pytest.approx(z[:, 3].tolist(), abs=1e-5) and set(pf.acts) == {3, 7}
    for row, zt in zip(pf.top, z):
        assert [f for f, _ in row] == zt.topk(4).indices.tolist()
        assert [v for _, v in row] == sorted((v for _, v in row), reverse=True)
    assert prompt_features(tiny_model, sae, pf.token_ids, top_k=4).top == pf.top  # token ids in: the same


@pytest.mark.parametrize("hook", [RESID1, HOOK_Z])
@pytest.mark.parametrize("kind", ["zero", "mean", "clamp", "steer"])
def test_intervention_changes_the_hook_output_by_the_code_change_times_the_decoder_row(tiny_model, hook, kind):
    """With the error term on: out' - out = (z'_f - z_f) W_dec[f], at the chosen positions only, exactly."""
    sae = dense_sae(hook)
    with Spliced(tiny_model, [sae]) as s:
        before = s.run(PROMPT, cache=[hook])
        z = before.features[sae.name]
        f = int(z[3].argmax())
        iv = {
            "zero": Intervention.zero(sae, f, positions=[3]),
            "mean": Intervention.mean(sae, [f], torch.tensor([0.7]), 3),
            "clamp": Intervention.clamp(sae, [f], 2.5, positions=[3]),
            "steer": Intervention.steer(sae, f, 4.0, positions=[3]),
        }[kind]
        s.intervene(iv)
        after = s.run(PROMPT, cache=[hook])
    dz = after.features[sae.name][3, f] - z[3, f]
    assert dz.abs() > 1e-3
    change = (after.cache[hook] - before.cache[hook]).reshape(z.shape[0], -1)
    assert torch.allclose(change[3], dz * sae.W_dec[f], atol=1e-5)
    assert change[torch.arange(z.shape[0]) != 3].abs().max() == 0


def test_interventions_compose_and_undo(tiny_model):
    sae = dense_sae(RESID1)
    with Spliced(tiny_model, [sae]) as s:
        clean = s.run(PROMPT).features[sae.name]
        h1 = s.intervene(Intervention.clamp(sae, [1, 2], 3.0))
        h2 = s.intervene(Intervention.steer(sae, [2], 1.5, positions=[0, 4]))
        both = s.run(PROMPT).features[sae.name]
        h1.remove()
        only2 = s.run(PROMPT).features[sae.name]
        h2.remove()
        again = s.run(PROMPT).features[sae.name]
    assert (both[:, 1] == 3.0).all() and both[4, 2] == 4.5 and both[3, 2] == 3.0
    assert only2[4, 2] == pytest.approx(clean[4, 2].item() + 1.5) and only2[3, 2] == clean[3, 2]
    assert torch.equal(again, clean)


def test_steered_generation_differs_and_strength_zero_equals_clean(tiny_model):
    sae = dense_sae(RESID1)
    with Spliced(tiny_model, []) as plain:  # no splice: steering is a plain addition at the hook
        clean = plain.generate(PROMPT, max_new_tokens=6)
        h = plain.intervene(Intervention.steer(sae, [5], 0.0))
        zero = plain.generate(PROMPT, max_new_tokens=6)
        h.remove()
        plain.intervene(Intervention.steer(sae, [5], 40.0))
        steered = plain.generate(PROMPT, max_new_tokens=6)
    with Spliced(tiny_model, [sae]) as s:
        s.intervene(Intervention.steer(sae, [5], 40.0))
        spliced = s.generate(PROMPT, max_new_tokens=6)
    assert zero.token_ids == clean.token_ids and steered.token_ids != clean.token_ids
    assert spliced.token_ids == steered.token_ids  # the same change with the splice (error term on)


def test_positions_in_generation_count_from_the_prompt(tiny_model):
    """A steer at the position of the first new token changes only what follows it."""
    sae = dense_sae(RESID1)
    with Spliced(tiny_model, []) as s:
        clean = s.generate(PROMPT, max_new_tokens=4)
        s.intervene(Intervention.steer(sae, [5], 60.0, positions=[clean.prompt_len]))
        late = s.generate(PROMPT, max_new_tokens=4)
    assert late.token_ids[: clean.prompt_len + 1] == clean.token_ids[: clean.prompt_len + 1]
    assert late.token_ids != clean.token_ids


def test_compare_interventions(tiny_model):
    sae = dense_sae(RESID1)
    r = compare_interventions(
        tiny_model,
        sae,
        PROMPT,
        [Intervention.clamp(sae, [0, 1, 2], 20.0)],
        tokens=[" value", " list"],
        top_n=5,
        max_new_tokens=3,
    )
    for side in ("before", "after"):
        probs = [p for _, p in r[side]["top"]]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True)
        lg = r[side]["logits"]
        assert r[side]["logit_diff"] == pytest.approx(lg[" value"] - lg[" list"], abs=1e-5)
    assert r["before"]["logits"] != r["after"]["logits"] and r["interventions"][0]["kind"] == "clamp"


def test_bad_input_is_named(tiny_model):
    sae = dense_sae(RESID1)
    cases = {
        "d_in=32": lambda: Spliced(tiny_model, [dense_sae(RESID1, d_in=32)]),
        "unknown hook name": lambda: Spliced(tiny_model, [dense_sae("blocks.1.hook_resid_pots")]),
        "feature 96 is out of range": lambda: Intervention.zero(sae, [96]),
        "position 40 is out of range": lambda: _run_with(tiny_model, sae, Intervention.zero(sae, [1], positions=[40])),
        "prompt is empty": lambda: prompt_features(tiny_model, sae, ""),
        "longer than the model's context": lambda: prompt_features(tiny_model, sae, [5] * 600),
        "must return a scalar": lambda: _attr(tiny_model, sae, lambda logits: logits[-1]),
        "is 2 tokens": lambda: _attr(tiny_model, sae, logit_diff(" value value", " list")),
    }
    for words, call in cases.items():
        with pytest.raises(CircuitError, match=words):
            call()


def _run_with(model, sae, iv):
    with Spliced(model, [sae]) as s:
        s.intervene(iv)
        s.run(PROMPT)


def _attr(model, sae, metric):
    with Spliced(model, [sae]) as s:
        s.attribute(PROMPT, PROMPT.replace("value", "list"), metric)
