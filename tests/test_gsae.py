"""Gradient-aware TopK (g-SAE, Olmo et al. 2024): TopK's ``selection: gradient``.

The selection rule on constructed cases, the inference rule, the errors, the gradient stream and training end to end
on a tiny model, and a short run on the real embedded model with its real gradients.
"""

import numpy as np
import pytest
import torch

import sae_lab
from sae_lab.activations.batch import GradBatch, split_batch
from sae_lab.activations.config import ActivationConfig
from sae_lab.activations.grad_stream import GradientStreamingSource, activations_and_gradients
from sae_lab.activations.source import TensorSource
from sae_lab.activations.stream import StreamingSource
from sae_lab.configbase import ConfigError
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae
from sae_lab.saes.topk import gradient_scores
from sae_lab.training import TrainConfig, train_sweep

HOOK = "blocks.2.hook_resid_post"


def identity_sae(beta: float | None, k: int = 2, selection: str = "gradient"):
    """d_in = d_sae = 4, W_enc = W_dec = I, zero biases: the pre-activations are x itself, d_i = e_i."""
    kw = {"grad_beta": beta} if beta is not None else {}
    sae = build_sae(dict(architecture="topk", d_in=4, d_sae=4, k=k, selection=selection, aux_coef=0, **kw))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(4))
        sae.W_dec.copy_(torch.eye(4))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def chosen(sae, x, grad=None) -> set[int]:
    out = sae.training_forward(x, grad=grad) if grad is not None else sae.training_forward(x)
    return set(torch.nonzero(out.fired).flatten().tolist())


X = torch.tensor([[3.0, 2.0, 1.0, 0.5]])
G = torch.tensor([[0.0, 0.0, 2.0, 0.0]])  # only latent 2's direction moves the loss: |d_2 . g| = 2


def test_selection_swaps_in_the_latent_whose_gradient_term_outranks_the_kth():
    """s = z (1 + beta |d . g|): latent 2 scores 1 (1 + 2 beta), which beats latent 1's 2 exactly when beta > 0.5."""
    assert chosen(identity_sae(None, selection="activation"), X) == {0, 1}  # plain TopK
    assert chosen(identity_sae(1.0), X, G) == {0, 2}  # 3 > 2: swapped
    assert chosen(identity_sae(0.6), X, G) == {0, 2}  # 2.2 > 2: swapped
    assert chosen(identity_sae(0.4), X, G) == {0, 1}  # 1.8 < 2: TopK's choice stands
    assert chosen(identity_sae(0.0), X, G) == {0, 1}  # beta = 0 is TopK
    assert chosen(identity_sae(5.0), X, torch.zeros_like(G)) == {0, 1}  # no gradient: TopK
    assert chosen(identity_sae(5.0), X, -G) == {0, 2}  # |d . g|: the sign of the effect does not matter


def test_values_are_the_pre_activations_not_the_scores():
    """The gradient term only selects: the kept values are ReLU(z), so x_hat = 3 e_0 + 1 e_2 (not 3 e_2)."""
    out = identity_sae(1.0).training_forward(X, grad=G)
    assert torch.allclose(out.x_hat, torch.tensor([[3.0, 0.0, 1.0, 0.0]]))


def test_a_negative_pre_activation_is_never_promoted_over_a_positive_one():
    x = torch.tensor([[3.0, 0.5, -1.0, 0.2]])
    assert chosen(identity_sae(100.0), x, torch.tensor([[0.0, 0.0, 9.0, 0.0]])) == {0, 1}


def test_random_case_matches_brute_force_and_differs_from_topk_only_where_scores_say():
    torch.manual_seed(0)
    sae = build_sae(dict(architecture="topk", d_in=16, d_sae=64, k=8, selection="gradient", grad_beta=3.0, aux_coef=0))
    plain = build_sae(dict(architecture="topk", d_in=16, d_sae=64, k=8, aux_coef=0))
    plain.load_state_dict(sae.state_dict())
    x, g = torch.randn(32, 16) + 0.3, torch.randn(32, 16) * 0.5
    with torch.no_grad():
        pre = sae.pre_acts(x)
        s = pre * (1 + 3.0 * (g @ sae.W_dec.t()).abs())  # the paper's score, written out
    assert torch.allclose(gradient_scores(pre, g, sae.W_dec, 3.0), s, atol=1e-5)
    changed = 0
    for row in range(32):
        one_g, one_t = (
            sae.training_forward(x[row : row + 1], grad=g[row : row + 1]),
            plain.training_forward(x[row : row + 1]),
        )
        positive = s[row] > 0
        want_g = set(s[row].topk(8).indices[positive[s[row].topk(8).indices]].tolist())
        want_t = set(pre[row].topk(8).indices[(pre[row] > 0)[pre[row].topk(8).indices]].tolist())
        assert set(torch.nonzero(one_g.fired).flatten().tolist()) == want_g
        assert set(torch.nonzero(one_t.fired).flatten().tolist()) == want_t
        changed += want_g != want_t
    assert changed > 0  # the case exercises real swaps


def test_inference_is_plain_topk_whatever_the_selection_and_beta():
    torch.manual_seed(1)
    g_sae = build_sae(dict(architecture="topk", d_in=16, d_sae=64, k=8, selection="gradient", grad_beta=10.0))
    plain = build_sae(dict(architecture="topk", d_in=16, d_sae=64, k=8))
    plain.load_state_dict(g_sae.state_dict())
    x = torch.randn(50, 16)
    with torch.no_grad():
        pre = plain.pre_acts(x)
        top = torch.zeros_like(pre).scatter_(-1, pre.topk(8).indices, 1.0) * pre.relu()
        assert torch.equal(g_sae.encode(x), plain.encode(x))
        assert torch.allclose(g_sae.encode(x), top)


def test_save_load_keeps_the_selection_and_saelens_reads_it_as_topk(tmp_path):
    import json

    sae = build_sae(dict(architecture="topk", d_in=8, d_sae=32, k=4, selection="gradient", grad_beta=0.25))
    SAEDir(tmp_path / "g").save(sae)
    assert json.loads((tmp_path / "g" / "cfg.json").read_text())["architecture"] == "topk"
    back = sae_lab.load_sae(tmp_path / "g")
    assert back.cfg.selection == "gradient" and back.cfg.grad_beta == 0.25 and back.needs_gradients
    x = torch.randn(10, 8)
    assert torch.equal(back.encode(x), sae.encode(x))


def test_bad_inputs_name_the_fix(tmp_path):
    sae = identity_sae(1.0)
    with pytest.raises(ConfigError, match="cache: null"):
        sae.training_forward(X)
    with pytest.raises(ConfigError, match="one gradient row per activation row"):
        sae.training_forward(X, grad=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="grad_beta=2.0 applies only to selection: gradient"):
        SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2, grad_beta=2.0)
    with pytest.raises(ValueError, match="selection"):
        SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2, selection="gradients")
    cfg = TrainConfig(batch_size=8, total_tokens=16, progress=False, device="cpu")
    saes = [SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2, selection="gradient", hook_name="tensor")]
    with pytest.raises(ConfigError, match="has no gradients.*cache: null"):
        train_sweep(saes, TensorSource(torch.randn(64, 4)), cfg, tmp_path / "run")
    from sae_lab.pipeline import RunConfig

    with pytest.raises(ValueError, match="a cache does not store; set cache: null"):
        RunConfig.model_validate(
            {
                "run_dir": str(tmp_path / "r"),
                "cache": {"path": str(tmp_path / "c")},
                "saes": [{"architecture": "topk", "expansion_factor": 2, "k": 4, "selection": "gradient"}],
            }
        )


def test_default_names_keep_topk_and_its_gradient_variant_apart():
    a = SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2)
    b = SAEConfig(architecture="topk", d_in=4, d_sae=8, k=2, selection="gradient")
    assert (a.name, b.name) == ("topk_k2", "topk_grad_k2")


# ---- the gradient stream (tiny random Llama) -----------------------------------------------------------
def streams(model):
    data = DataConfig(context_length=32, max_tokens=2048)
    acts = ActivationConfig(hooks=[HOOK], batch_size=4, norm_sample_contexts=8)
    return StreamingSource(model, data, acts, buffer_tokens=512), GradientStreamingSource(
        model, data, acts, buffer_tokens=512
    )


def test_gradient_is_the_loss_derivative_at_the_hook(tiny_model):
    """Central finite difference of the summed next-token CE along a random direction at one position."""
    tokens = np.stack(list(iter_contexts(DataConfig(context_length=32, max_tokens=2048), tiny_model.tokenizer))[:2])
    acts, grads = activations_and_gradients(tiny_model, HOOK, tokens)
    ids = torch.as_tensor(tokens, dtype=torch.long)
    torch.manual_seed(0)
    delta = torch.zeros_like(acts)
    delta[1, 7] = 1e-3 * torch.randn(acts.shape[-1])

    def loss(shift):
        with torch.no_grad():
            logits = tiny_model.bridge.run_with_hooks(ids, fwd_hooks=[(HOOK, lambda a, hook: a + shift)])
        return float(
            torch.nn.functional.cross_entropy(
                logits[:, :-1].flatten(0, 1).double(), ids[:, 1:].flatten(), reduction="sum"
            )
        )

    fd = (loss(delta) - loss(-delta)) / 2
    assert fd == pytest.approx(float((grads * delta).sum()), rel=2e-2)
    assert float(grads[:, -1].abs().max()) == 0.0  # the last position predicts nothing
    assert float(grads[:, :-1].abs().mean()) > 0


def test_gradient_stream_yields_the_plain_streams_rows_with_their_gradients(tiny_model):
    plain, grad_src = streams(tiny_model)
    assert grad_src.has_gradients and not getattr(plain, "has_gradients", False)
    a = [b for _, b in zip(range(4), plain.iter_batches(100, seed=3))]
    b = [b for _, b in zip(range(4), grad_src.iter_batches(100, seed=3))]
    assert all(isinstance(g, GradBatch) and g.x.shape == g.grad.shape == (100, 64) for g in b)
    assert all(torch.allclose(x, g.x) for x, g in zip(a, b))  # same rows, same shuffle
    resumed = next(grad_src.iter_batches(100, seed=3, skip_batches=3))
    assert torch.equal(resumed.x, b[3].x) and torch.equal(resumed.grad, b[3].grad)
    # normalised units: dL/dx' = dL/dx / s for x' = s x; the rows' gradients are the raw ones divided by s
    tokens = np.stack(list(iter_contexts(grad_src.data, tiny_model.tokenizer))[:4])
    acts, grads = activations_and_gradients(tiny_model, HOOK, tokens)
    row = acts[0, 5] * grad_src.norm_scale
    hit = [(i, j) for i, g in enumerate(b) for j in range(100) if torch.allclose(g.x[j], row, atol=1e-5)]
    assert hit, "row (context 0, position 5) not found in the first batches"
    i, j = hit[0]
    assert torch.allclose(b[i].grad[j], grads[0, 5] / grad_src.norm_scale, rtol=1e-4, atol=1e-7)
    x, g = split_batch(b[0])
    assert x is b[0].x and g is b[0].grad and split_batch(a[0]) == (a[0], None)


def test_sweep_trains_topk_and_gsae_side_by_side_on_the_gradient_stream(tiny_model, tmp_path):
    _, source = streams(tiny_model)
    saes = [
        SAEConfig(architecture="topk", d_in=64, d_sae=128, k=8, hook_name=HOOK),
        SAEConfig(architecture="topk", d_in=64, d_sae=128, k=8, hook_name=HOOK, selection="gradient", grad_beta=2.0),
    ]
    cfg = TrainConfig(
        batch_size=64, total_tokens=30 * 64, lr=3e-3, log_every_steps=10, progress=False, device="cpu", seed=0
    )
    result = train_sweep(saes, source, cfg, tmp_path / "run")
    assert result.status == "done" and set(result.results) == {"topk_k8", "topk_grad_k8"}
    for name, r in result.results.items():
        assert r.metrics["fvu"] < 0.9, (name, r.metrics)
        assert (tmp_path / "run" / "saes" / name / "cfg.json").exists()
    t, g = result.saes["topk_k8"], result.saes["topk_grad_k8"]
    assert not torch.equal(t.W_dec, g.W_dec)  # same init and data: only the selection differs
    assert sae_lab.load_sae(tmp_path / "run" / "saes" / "topk_grad_k8").cfg.selection == "gradient"


def test_run_config_without_cache_opens_the_gradient_stream(tiny_model, tmp_path):
    from sae_lab.pipeline import RunConfig, open_source

    cfg = RunConfig.model_validate(
        {
            "run_dir": str(tmp_path / "r"),
            "data": {"context_length": 32, "max_tokens": 1024},
            "activations": {"hooks": [HOOK], "batch_size": 4, "norm_sample_contexts": 8},
            "cache": None,
            "saes": [{"architecture": "topk", "expansion_factor": 2, "k": 4, "selection": "gradient"}],
        }
    )
    assert isinstance(open_source(cfg, model=tiny_model), GradientStreamingSource)
    plain = cfg.model_copy(update={"saes": [SAEConfig(architecture="topk", expansion_factor=2, k=4)]})
    assert type(open_source(plain, model=tiny_model)) is StreamingSource


# ---- the real embedded model ------------------------------------------------------------------------
@pytest.mark.embedded
def test_gsae_trains_on_the_embedded_models_real_gradients(embedded_model, tmp_path):
    """A short g-SAE run at layer 15 from the gradient stream: the real gradients are the loss's derivative, they
    change a real share of the selections, and the g-SAE learns (FVU well below 1) next to a plain TopK."""
    hook = "blocks.15.hook_resid_post"
    data = DataConfig(context_length=64)
    acts = ActivationConfig(hooks=[hook], batch_size=8, norm_sample_contexts=16, exclude_outliers=10)
    source = GradientStreamingSource(embedded_model, data, acts, buffer_tokens=2048)
    saes = [
        SAEConfig(architecture="topk", d_in=576, d_sae=1152, k=16, hook_name=hook),
        SAEConfig(architecture="topk", d_in=576, d_sae=1152, k=16, hook_name=hook, selection="gradient", grad_beta=1.0),
    ]
    cfg = TrainConfig(
        batch_size=256, total_tokens=12 * 256, lr=2e-3, log_every_steps=4, progress=False, device="cpu", seed=0
    )
    result = train_sweep(saes, source, cfg, tmp_path / "run", extra_config={"model": {"name": "embedded"}})
    g = result.saes["topk_grad_k16"]
    for name, r in result.results.items():
        assert r.metrics["fvu"] < 0.8, (name, r.metrics)
    with torch.no_grad():  # on a batch the run did not train on: how often the gradient term changes the choice
        x, grad = split_batch(next(source.iter_batches(256, seed=1)))
        assert torch.isfinite(grad).all() and float(grad.abs().mean()) > 0
        pre = g.pre_acts(x)
        by_grad = torch.zeros_like(pre).scatter_(-1, gradient_scores(pre, grad, g.W_dec, 1.0).topk(16).indices, 1)
        by_pre = torch.zeros_like(pre).scatter_(-1, pre.topk(16).indices, 1)
        swapped = float((by_grad != by_pre).sum() / 2 / by_pre.sum())
    print(
        f"\ng-SAE on embedded: swapped {swapped:.3f} of the selections; fvu "
        f"{ {n: round(r.metrics['fvu'], 3) for n, r in result.results.items()} }"
    )
    assert 0 < swapped < 1, swapped
    # the real gradient is the loss's derivative (finite difference at one position of one context)
    tokens = np.stack(list(iter_contexts(data, embedded_model.tokenizer))[:1])
    a, gr = activations_and_gradients(embedded_model, hook, tokens)
    ids = torch.as_tensor(tokens, dtype=torch.long)
    delta = torch.zeros_like(a)
    delta[0, 20] = 0.05 * gr[0, 20] / gr[0, 20].norm()

    def loss(shift):
        with torch.no_grad():
            logits = embedded_model.bridge.run_with_hooks(ids, fwd_hooks=[(hook, lambda v, hook: v + shift)])
        return float(torch.nn.functional.cross_entropy(logits[0, :-1].double(), ids[0, 1:], reduction="sum"))

    fd = (loss(delta) - loss(-delta)) / 2
    assert fd == pytest.approx(float((gr * delta).sum()), rel=0.1)


def test_the_example_config_validates_and_streams_with_gradients():
    from pathlib import Path

    from sae_lab.configbase import load_config
    from sae_lab.pipeline import RunConfig, _needs_gradients

    path = Path(__file__).parents[1] / "experiments" / "configs" / "gsae_vs_topk.yaml"
    cfg = load_config(RunConfig, path, [])
    assert cfg.cache is None and _needs_gradients(cfg) and [s.selection for s in cfg.saes] == ["activation", "gradient"]
