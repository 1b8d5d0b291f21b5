"""The SAE contract, checked for every registered architecture."""

from __future__ import annotations

import pytest
import torch

from sae_lab.configbase import ConfigError, build_config
from sae_lab.saedir import SAEDir
from sae_lab.saes import BaseSAE, SAEConfig, build_sae, get_sae_class, register, registered_names

D_IN, D_SAE, K, B = 16, 64, 4, 48
# Per-architecture options for the contract tests (an architecture not listed gets k=K if it has a k).
OPTIONS: dict[str, dict] = {}
# Options that make the fold test exercise a value in activation units (MP's absolute stopping threshold).
FOLD_OPTIONS = {"matching_pursuit": lambda s: dict(mp_stop="absolute", mp_threshold=0.5 * s)}
# The tests below marked by EVERY_ARCHITECTURE run on every registered architecture, or on CONTRACT_ARCHS
# when the importing test module defines it (see test_saes_toy.py: a new architecture runs them unchanged).
EVERY_ARCHITECTURE = [
    "test_shapes",
    "test_decoder_norms_and_parallel_grads",
    "test_save_load_round_trip",
    "test_gradients_reach_every_parameter",
    "test_fold_scale",
    "test_inference_is_batch_independent",
    "test_dead_tracking_in_tokens",
    "test_has_thresholds_says_whether_there_is_a_calibrator",
]
__all__ = ["pytest_generate_tests", *EVERY_ARCHITECTURE]


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ in EVERY_ARCHITECTURE:
        metafunc.parametrize("arch", getattr(metafunc.module, "CONTRACT_ARCHS", None) or registered_names())


def options(arch: str) -> dict:
    if arch in OPTIONS:
        return OPTIONS[arch]
    return {"k": K} if "k" in get_sae_class(arch).config_class.model_fields else {}


def make(arch: str, **kw) -> BaseSAE:
    torch.manual_seed(0)
    return build_sae(dict(architecture=arch, d_in=D_IN, d_sae=D_SAE, **{**options(arch), **kw}))


def data(n: int = B, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g) + 0.5


def warm(sae: BaseSAE, x: torch.Tensor, steps: int = 3) -> None:
    """A few training forwards so running statistics (thresholds, densities) are set."""
    for _ in range(steps):
        sae.training_forward(x)


def test_every_architecture_is_registered():
    assert {"topk", "mutual_choice", "feature_choice", "matching_pursuit", "standard"} <= set(registered_names())


def test_shapes(arch):
    sae, x = make(arch), data()
    warm(sae, x)
    out = sae.training_forward(x)
    assert out.x_hat.shape == x.shape and out.fired.shape == (D_SAE,)
    assert sae.encode(x).shape == (B, D_SAE)
    assert sae.encode(x.view(6, 8, D_IN)).shape == (6, 8, D_SAE)
    assert sae(x).shape == x.shape and sae.decode(sae.encode(x)).shape == x.shape
    assert out.l0 > 0 and all(v.dim() == 0 for v in out.aux_losses.values())


def test_decoder_norms_and_parallel_grads(arch):
    sae = make(arch)
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-5)
    if sae.has_encoder:
        assert torch.allclose(sae.W_enc, sae.W_dec.t())  # tied init
    with torch.no_grad():
        sae.W_dec.mul_(torch.rand(D_SAE, 1) + 0.5)
    sae.normalize_decoder()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(D_SAE), atol=1e-5)
    sae.W_dec.grad = torch.randn_like(sae.W_dec)
    sae.remove_parallel_grads()
    assert (sae.W_dec.grad * sae.W_dec).sum(1).abs().max() < 1e-5


def test_save_load_round_trip(arch, tmp_path):
    sae, x = make(arch), data()
    warm(sae, x)
    SAEDir(tmp_path / "s").save(sae)
    back = SAEDir(tmp_path / "s").load()
    assert type(back) is type(sae)
    for k, v in sae.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    assert torch.equal(back.encode(x), sae.encode(x)) and torch.equal(back(x), sae(x))


def test_gradients_reach_every_parameter(arch):
    sae, x = make(arch), data()
    out = sae.training_forward(x)
    loss = ((out.x_hat - x) ** 2).sum() + sum(out.aux_losses.values(), torch.zeros(()))
    loss.backward()
    for name, p in sae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_fold_scale(arch, tmp_path):
    """Folded SAE on raw x == unfolded SAE on s*x, divided by s (codes too)."""
    s = 3.7
    sae, x = make(arch, **FOLD_OPTIONS.get(arch, lambda s: {})(s)), data()
    sae.init_b_dec(s * data(seed=2), "mean")
    if sae.has_encoder:
        with torch.no_grad():
            sae.b_enc.normal_(0, 0.3)
    warm(sae, s * data(seed=2))  # thresholds come from other tokens: no exact ties with x
    SAEDir(tmp_path / "f").save(sae, fold_scale=s)
    folded = SAEDir(tmp_path / "f").load()
    assert torch.allclose(folded(x), sae(s * x) / s, atol=1e-4, rtol=1e-4)
    assert torch.allclose(folded.encode(x), sae.encode(s * x) / s, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(folded(x), sae(x), atol=1e-3)  # folding changed something


def test_inference_is_batch_independent(arch):
    sae, x = make(arch), data()
    warm(sae, data(seed=3))  # thresholds from other tokens (a token at exactly a threshold is a float tie)
    z = sae.encode(x)
    for i in (0, 7, B - 1):
        assert torch.allclose(sae.encode(x[i : i + 1])[0], z[i], atol=1e-5)
    assert torch.allclose(sae.encode(x[:5]), z[:5], atol=1e-5)


def test_has_thresholds_says_whether_there_is_a_calibrator(arch):
    """The trainer holds a calibration sample out of training only for SAEs with ``has_thresholds``."""
    sae = make(arch)
    assert (sae.threshold_calibrator(B, 1) is not None) == sae.has_thresholds
    if arch in ("topk", "mutual_choice", "feature_choice", "matching_pursuit"):
        assert sae.has_thresholds == (arch in ("mutual_choice", "feature_choice"))


@pytest.mark.parametrize("arch", ["mutual_choice", "feature_choice"])
def test_choice_training_rule_depends_on_batch_but_inference_does_not(arch):
    """The training rule is batch-level (so the inference rule is a real, separate mechanism)."""
    sae, x = make(arch), data()
    warm(sae, x, 5)
    small = sae.training_forward(x[:16]).x_hat  # the budget is shared by 16 tokens vs by 48
    shared = sae.training_forward(x).x_hat[:16]
    assert not torch.allclose(small, shared, atol=1e-4)
    assert torch.allclose(sae(x[:1]), sae(x)[:1], atol=1e-5)


def test_dead_tracking_in_tokens(arch):
    sae, x = make(arch, dead_tokens=2 * B), data()
    with torch.no_grad():
        sae.W_dec[0] = -sae.W_dec[0] * 0 - 1 / D_IN**0.5  # atom 0 points against the data
        if sae.has_encoder:
            sae.W_enc[:, 0] = sae.W_dec[0]
            sae.b_enc[0] = -100.0
    sae.training_forward(x)
    assert not sae.dead_mask()[0]
    sae.training_forward(x)
    assert sae.dead_mask()[0] and int(sae.tokens_since_fired[0]) == 2 * B
    assert not sae.dead_mask().all()


def test_registry_errors():
    with pytest.raises(ConfigError, match="known architectures: .*topk"):
        get_sae_class("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register("topk")(type("Other", (BaseSAE,), {}))


@pytest.mark.parametrize(
    "bad, words",
    [
        (dict(architecture="topk", d_in=8, d_sae=16, k=17), ["k=17", "d_sae=16"]),
        (dict(architecture="tpok", d_in=8, d_sae=16, k=2), ["tpok", "mutual_choice"]),
        (dict(architecture="topk", d_in=8, k=2), ["d_sae", "expansion_factor"]),
        (
            dict(architecture="feature_choice", d_in=8, d_sae=16, k=2, capacity_rule="zipfy"),
            ["capacity_rule", "uniform", "zipf"],
        ),
        (dict(architecture="topk", d_in=8, d_sae=16, k=2, capacity_rule="zipf"), ["capacity_rule", "feature_choice"]),
        (dict(architecture="standard", d_in=8, d_sae=16, k=2), ["'k' is an option of", "topk", "not of 'standard'"]),
        (dict(architecture="matching_pursuit", d_in=8, d_sae=16, k=2, aux_zipf=True), ["aux_zipf", "topk"]),
        (dict(architecture="matching_pursuit", d_in=8, d_sae=16, k=2, aux_k=20), ["aux_k=20"]),
        (dict(architecture="topk", d_in=8, d_sae=16, k=2, dead_tokenz=5), ["dead_tokenz", "dead_tokens"]),
        (dict(architecture="mutual_choice", d_in=8, d_sae=16), ["k is required"]),
        (dict(architecture="topk", d_in=8, d_sae=16, k=2, aux_k=20), ["aux_k=20"]),
    ],
)
def test_config_errors_name_field_and_allowed_values(bad, words):
    with pytest.raises(ConfigError) as e:
        build_config(SAEConfig, bad)
    for w in words:
        assert w in str(e.value)


def test_config_resolves_expansion_factor_and_name():
    cfg = build_config(SAEConfig, dict(architecture="topk", d_in=8, expansion_factor=4, k=2))
    assert cfg.d_sae == 32 and cfg.name == "topk_k2"


def test_feature_choice_batch_size_rule():
    sae = make("feature_choice", min_capacity=4)  # needs k*B >= 4*64 -> B >= 64
    sae.check_batch_size(64)
    with pytest.raises(ConfigError, match="batch_size >= 64"):
        sae.check_batch_size(63)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
@pytest.mark.parametrize("apply_b_dec", [True, False])
def test_loads_foreign_saelens_directories(arch, apply_b_dec, tmp_path):
    """A directory written the way SAELens writes it (no sae_lab.json) loads and computes SAELens's encode."""
    import json

    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(5)
    W = {
        "W_enc": torch.randn(D_IN, D_SAE, generator=g),
        "b_enc": torch.randn(D_SAE, generator=g),
        "W_dec": torch.randn(D_SAE, D_IN, generator=g),
        "b_dec": torch.randn(D_IN, generator=g),
    }
    if arch == "jumprelu":
        W["threshold"] = torch.rand(D_SAE, generator=g)
    save_file(W, str(tmp_path / "sae_weights.safetensors"))
    cfg = {
        "architecture": arch,
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": apply_b_dec,
        "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.3.hook_resid_post"},
        **({"k": K} if arch == "topk" else {}),
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = SAEDir(tmp_path).load()
    x = data()
    pre = (x - W["b_dec"] if apply_b_dec else x) @ W["W_enc"] + W["b_enc"]
    if arch == "standard":
        z = pre.relu()
    elif arch == "topk":
        v, i = pre.topk(K, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, i, v.relu())
    else:
        z = pre.relu() * (pre > W["threshold"])
    assert sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert torch.allclose(sae.encode(x), z, atol=1e-4)
    assert torch.allclose(sae(x), z @ W["W_dec"] + W["b_dec"], atol=1e-3)


def test_saved_choice_sae_is_saelens_jumprelu(tmp_path):
    import json

    from safetensors.torch import load_file

    sae = make("mutual_choice")
    warm(sae, data())
    SAEDir(tmp_path / "m").save(sae)
    cfg = json.loads((tmp_path / "m" / "cfg.json").read_text())
    w = load_file(str(tmp_path / "m" / "sae_weights.safetensors"))
    assert cfg["architecture"] == "jumprelu" and set(w) == {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"}
    x = data(seed=4)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    assert torch.allclose(pre.relu() * (pre > w["threshold"]), sae.encode(x), atol=1e-5)


def saelens_mp_reference(x, W_dec, b_dec, threshold, max_iterations, stop_on_duplicate_support):
    """SAELens 6's matching-pursuit encode, step by step: relu-argmax, scatter-add, then the stopping rules."""
    r = x - b_dec
    acts = torch.zeros(x.shape[0], W_dec.shape[0])
    prev, done = torch.zeros_like(acts, dtype=torch.bool), torch.zeros(x.shape[0], dtype=torch.bool)
    for _ in range(max_iterations):
        idx = (r @ W_dec.T).relu().max(dim=1, keepdim=True).indices
        sel = W_dec[idx.squeeze(1)]
        val = (r * sel).sum(-1, keepdim=True).relu() * (~done).unsqueeze(1)
        acts.scatter_add_(1, idx, val)
        r = r - val * sel
        support = acts != 0
        if stop_on_duplicate_support:
            done |= (support == prev).all(1)
            prev = support
        if threshold > 0:
            done |= r.norm(dim=-1) < threshold
        if done.all():
            break
    return acts


@pytest.mark.parametrize(
    "threshold, iters, dup", [(0.0, 6, False), (1.5, 40, False), (0.0, 40, True), (1.0, None, True)]
)
def test_loads_foreign_saelens_matching_pursuit(threshold, iters, dup, tmp_path):
    import json

    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(2)
    W_dec = torch.nn.functional.normalize(torch.randn(D_SAE, D_IN, generator=g), dim=1)
    b_dec = torch.randn(D_IN, generator=g)
    save_file({"W_dec": W_dec, "b_dec": b_dec, "b_enc": torch.zeros(D_SAE)}, str(tmp_path / "sae_weights.safetensors"))
    cfg = {
        "architecture": "matching_pursuit",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "apply_b_dec_to_input": True,
        "residual_threshold": threshold,
        "max_iterations": iters,
        "stop_on_duplicate_support": dup,
        "metadata": {"hook_name": "blocks.1.hook_resid_post"},
    }
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    sae = SAEDir(tmp_path).load()
    x = data(seed=9) * 2
    expect = saelens_mp_reference(x, W_dec, b_dec, threshold, iters or D_IN, dup)
    got = sae.encode(x)
    assert torch.allclose(got, expect, atol=1e-4)
    assert (expect != 0).sum(1).float().std() > 0 or not (dup or threshold)  # the adaptive rules did act


@pytest.mark.parametrize(
    "options, mapped",
    [
        ({}, True),
        ({"mp_stop": "absolute", "mp_threshold": 0.5}, True),
        ({"mp_stop_on_repeat": True, "mp_k_max": 20}, True),
        ({"mp_nonneg": False}, False),
        ({"mp_stop": "relative", "mp_threshold": 0.3}, False),
    ],
)
def test_saved_matching_pursuit_maps_to_saelens_only_when_exact(options, mapped, tmp_path):
    import json

    sae = make("matching_pursuit", **options)
    SAEDir(tmp_path / "mp").save(sae, fold_scale=2.0)
    cfg = json.loads((tmp_path / "mp" / "cfg.json").read_text())
    assert cfg["architecture"] == ("matching_pursuit" if mapped else "sae_lab_matching_pursuit")
    if mapped:  # SAELens's own rule, on the file alone, reproduces our folded SAE's codes
        from safetensors.torch import load_file

        w = load_file(str(tmp_path / "mp" / "sae_weights.safetensors"))
        x = data(seed=3)
        expect = saelens_mp_reference(
            x,
            w["W_dec"],
            w["b_dec"],
            cfg["residual_threshold"],
            cfg["max_iterations"],
            cfg["stop_on_duplicate_support"],
        )
        assert torch.allclose(SAEDir(tmp_path / "mp").load().encode(x), expect, atol=1e-4)
