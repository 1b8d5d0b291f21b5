"""The circuit API on the real embedded model (SmolLM2-135M): splice, intervention identity, generation."""

import pytest
import torch

from sae_lab.activations.hooks import stop_layer
from sae_lab.circuits import Intervention, Spliced
from sae_lab.saes import SAEConfig, build_sae

pytestmark = pytest.mark.embedded
RESID, HOOK_Z = "blocks.6.hook_resid_post", "blocks.6.attn.hook_z"
PROMPT = "The capital of France is"


def _sae(model, hook: str, name: str):
    """A TopK SAE with b_dec at the mean activation, so that its features respond to the prompt."""
    torch.manual_seed(0)
    s = build_sae(SAEConfig(architecture="topk", d_in=576, d_sae=1152, k=16, hook_name=hook, name=name)).eval()
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(model.bridge.to_tokens("Python is a programming language used by "
                                                                      "many people to write software."),
                                               names_filter=[hook], stop_at_layer=stop_layer([hook]))
        s.init_b_dec(cache[hook][0, 1:].reshape(-1, 576), "mean")
    return s


@pytest.fixture(scope="module")
def saes(embedded_model):
    return _sae(embedded_model, RESID, "resid6"), _sae(embedded_model, HOOK_Z, "z6")


def test_splice_with_error_term_reproduces_clean_logits(embedded_model, saes):
    m = embedded_model
    clean = m.bridge(m.bridge.to_tokens(PROMPT))[0]
    with Spliced(m, list(saes)) as s:
        out = s.run(PROMPT)
        assert out.tokens[-1] == " is" and (out.logits - clean).abs().max() < 1e-4
        assert m.tokenizer.decode([int(out.logits[-1].argmax())]) == " Paris"
    with Spliced(m, list(saes), error_term=False) as s:
        assert (s.run(PROMPT).logits - clean).abs().max() > 1e-2


def test_intervention_identity_on_the_embedded_model(embedded_model, saes):
    for sae in saes:
        with Spliced(embedded_model, [sae]) as s:
            before = s.run(PROMPT, cache=[sae.cfg.hook_name])
            z = before.features[sae.name]
            f = int(z[-1].argmax())
            s.intervene(Intervention.clamp(sae, [f], float(z[-1, f]) + 3.0, positions=[len(z) - 1]))
            after = s.run(PROMPT, cache=[sae.cfg.hook_name])
        h = sae.cfg.hook_name
        change = (after.cache[h] - before.cache[h]).reshape(len(z), -1)
        assert torch.allclose(change[-1], 3.0 * sae.W_dec[f], atol=1e-4)
        assert change[:-1].abs().max() == 0


def test_steered_generation_on_the_embedded_model(embedded_model, saes):
    sae = saes[0]
    with Spliced(embedded_model, []) as s:
        clean = s.generate(PROMPT, max_new_tokens=5)
        h = s.intervene(Intervention.steer(sae, [7], 0.0))
        assert s.generate(PROMPT, max_new_tokens=5).token_ids == clean.token_ids
        h.remove()
        s.intervene(Intervention.steer(sae, [7], 200.0))
        assert s.generate(PROMPT, max_new_tokens=5).token_ids != clean.token_ids
    assert clean.text.startswith(" Paris")


def test_direct_feature_attribution_sums_exactly_with_grouped_query_attention(embedded_model, saes):
    from sae_lab.circuits.dfa import direct_feature_attribution

    sae = saes[1]  # blocks.6.attn.hook_z: 9 query heads reading 3 key/value heads
    for f in (0, 500):
        d = direct_feature_attribution(embedded_model, sae, PROMPT, f)
        assert d.by_head_source.shape == (9, len(d.tokens))
        assert float(d.by_head_source.double().sum()) + d.bias == pytest.approx(d.pre_activation, abs=1e-4)


def test_attribution_is_exact_for_a_linear_metric_on_the_embedded_model(embedded_model):
    from sae_lab.circuits import logit_diff
    from sae_lab.circuits.attribution import patch_effect

    sae = _sae(embedded_model, "unembed.hook_in", "lin")  # the logits are linear in this hook's activation
    metric = logit_diff(" Paris", " London")
    with Spliced(embedded_model, [sae]) as s:
        attr = s.attribute(PROMPT, "The capital of England is", metric)
        nodes = attr.top(6)
        exact = patch_effect(s, PROMPT, "The capital of England is", metric, nodes)
    assert [n["estimate"] for n in nodes] == pytest.approx(exact, abs=2e-3, rel=1e-3)


def test_edges_agree_with_finite_differences_on_the_embedded_model(embedded_model, saes):
    from sae_lab.circuits.edges import edges

    up, down = saes[0], _sae(embedded_model, "blocks.9.hook_resid_post", "resid9")
    with Spliced(embedded_model, [up, down]) as s:
        g = edges(s, PROMPT, up, down, n_down=1, n_up=2)
        e = g.edges[0]
        u, d = int(e["source"].split("/")[1]), int(e["target"].split("/")[1])

        def total(eps):
            def scale(z, hook):
                z = z.clone()
                z[..., u] *= 1 + eps
                return z
            out = s.run(PROMPT, fwd_hooks=[(f"{up.cfg.hook_name}.hook_sae_acts", scale)])
            return float(out.features[down.name][:, d].double().sum())

        fd = (total(1e-2) - total(-1e-2)) / 2e-2
    assert abs(e["weight"]) > 0 and e["weight"] == pytest.approx(fd, rel=5e-2, abs=1e-3)
