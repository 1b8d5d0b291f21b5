"""The circuit API on the real embedded model (SmolLM2-135M): splice, intervention identity, generation."""

import pytest
import torch

from sae_lab.activations.hooks import stop_layer
from sae_lab.circuits import Intervention, Spliced
from sae_lab.saes import SAEConfig, build_sae

pytestmark = pytest.mark.embedded
RESID, HOOK_Z = "blocks.6.hook_resid_post", "blocks.6.attn.hook_z"
PROMPT = "The capital of France is"


def _sae(model, hook: str, name: str, architecture: str = "topk"):
    """A TopK (or ReLU) SAE with b_dec at the mean activation, so that its features respond to the prompt."""
    torch.manual_seed(0)
    k = {"k": 16} if architecture == "topk" else {}
    s = build_sae(SAEConfig(architecture=architecture, d_in=576, d_sae=1152, hook_name=hook, name=name, **k)).eval()
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(
            model.bridge.to_tokens("Python is a programming language used by many people to write software."),
            names_filter=[hook],
            stop_at_layer=stop_layer([hook]),
        )
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


def test_edges_on_the_embedded_model_match_the_definition_and_exact_patching(embedded_model, saes):
    """e(u -> d) = d/de m(d set to its value with u = u_c + e (u_x - u_c)), by central differences; error nodes.
    ReLU SAEs: a TopK code jumps when the selection changes, which finite differences cannot follow."""
    from sae_lab.circuits import logit_diff
    from sae_lab.circuits.edges import edges, validate_edges

    clean, corrupt = (
        "When Mary and John went to the store, John gave a drink to",
        "When Mary and John went to the store, Mary gave a drink to",
    )
    metric = logit_diff(" Mary", " John")
    up, down = (_sae(embedded_model, f"blocks.{L}.hook_resid_post", f"relu{L}", "standard") for L in (6, 9))
    with Spliced(embedded_model, [up, down]) as s:
        g = edges(s, clean, corrupt, metric, up, down, n_down=3, n_up=3)
        assert any(n["feature"] == "error" for n in g.nodes)
        top = max(g.edges, key=lambda e: abs(e["weight"]))
        u, d = g.node(top["source"]), g.node(top["target"])
        zc, zx = s.run(clean).features, s.run(corrupt).features
        ec, ex = s.run(clean).errors, s.run(corrupt).errors

        def through(eps):
            src_c, src_x = (ec, ex) if u["feature"] == "error" else (zc, zx)
            col = slice(None) if u["feature"] == "error" else u["feature"]
            name = f"{up.cfg.hook_name}.hook_sae_{'error' if u['feature'] == 'error' else 'acts'}"

            def patch(t, hook):
                t = t.clone()
                t[0, :, col] = src_c[up.name][:, col] + eps * (src_x[up.name][:, col] - src_c[up.name][:, col])
                return t

            new = s.run(clean, fwd_hooks=[(name, patch)])
            dcol = slice(None) if d["feature"] == "error" else d["feature"]
            dval = (new.errors if d["feature"] == "error" else new.features)[down.name][:, dcol]
            dname = f"{down.cfg.hook_name}.hook_sae_{'error' if d['feature'] == 'error' else 'acts'}"

            def put(t, hook):
                t = t.clone()
                t[0, :, dcol] = dval
                return t

            return float(metric.bind(embedded_model)(s.run(clean, fwd_hooks=[(dname, put)]).logits))

        fd = (through(1e-2) - through(-1e-2)) / 2e-2
        exact = through(1.0) - through(0.0)
        v = validate_edges(s, clean, corrupt, metric, g, n=1)
    assert abs(top["weight"]) > 1e-4 and top["weight"] == pytest.approx(fd, rel=5e-2, abs=1e-4)
    assert v["edges"][0] == top and v["exact"][0] == pytest.approx(exact, abs=1e-4)
