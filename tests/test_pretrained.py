"""Published SAEs by name: the registry, the converters (against each format's published definition), the local
Hugging Face cache, the offline error and the model each SAE names. Stand-ins only: never the network."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sae_lab
from pretrained_helpers import (
    gemma_scope_params,
    gemma_scope_reference,
    snapshot,
    sparsify_reference,
    use_hub_cache,
    write_gemma_scope,
    write_sparsify,
)
from sae_lab.cli import main as cli
from sae_lab.configbase import ConfigError
from sae_lab.pretrained import model_names, resolve_release
from sae_lab.pretrained.hub import HubUnavailable

GS_REPO, GS_ID = "google/gemma-scope-2b-pt-res", "layer_3/width_16k/average_l0_5"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    return use_hub_cache(monkeypatch, tmp_path / "hf_cache")


def test_gemma_scope_npz_matches_the_published_definition(hub):
    params = gemma_scope_params(16, 48)
    write_gemma_scope(snapshot(hub, GS_REPO) / GS_ID, params)
    sae = sae_lab.load_sae("gemma-scope-2b-pt-res", sae_id=GS_ID)
    x = np.random.default_rng(1).standard_normal((64, 16)).astype(np.float32)
    f, x_hat = gemma_scope_reference(params, x)
    z_ref = x.astype(np.float64) @ params["W_enc"] + params["b_enc"]
    assert np.abs(z_ref - params["threshold"]).min() > 1e-4  # no token sits at a threshold (a float tie)
    assert 0.05 < (f > 0).mean() < 0.95  # the thresholds matter: some latents are cut, some pass
    exact = sae.double()  # the converted parameters (float32) evaluated in float64: the conversion's own error
    got = exact.encode(torch.from_numpy(x).double()).detach().numpy()
    assert np.abs(got - f).max() < 1e-6
    assert np.abs(exact(torch.from_numpy(x).double()).detach().numpy() - x_hat).max() < 1e-6
    assert sae.architecture == "jumprelu" and sae.cfg.hook_name == "blocks.3.hook_resid_post"
    assert sae.model_name == "google/gemma-2-2b"


def test_gemma_scope_safetensors_from_a_user_registry_file(hub, tmp_path, monkeypatch):
    """Gemma Scope 2's params.safetensors (lower-case w_ names), via $SAE_LAB_RELEASES in SAELens's YAML format."""
    params = gemma_scope_params(16, 32, seed=3)
    write_gemma_scope(snapshot(hub, "me/my-scope") / "attn_out/layer_2_small", params, safetensors=True)
    reg = tmp_path / "releases.yaml"
    reg.write_text(
        "my-scope:\n  repo_id: me/my-scope\n  model: gemma-2-2b\n  conversion_func: gemma_3\n"
        "  saes:\n  - id: l2\n    path: attn_out/layer_2_small\n"
    )
    monkeypatch.setenv("SAE_LAB_RELEASES", str(reg))
    [r] = resolve_release("my-scope", "l2")
    x = np.random.default_rng(2).standard_normal((32, 16)).astype(np.float32)
    f, _ = gemma_scope_reference(params, x)
    assert np.abs(r.sae.double().encode(torch.from_numpy(x).double()).detach().numpy() - f).max() < 1e-6
    assert r.sae.cfg.hook_name == "blocks.2.attn.hook_z" and r.model == "google/gemma-2-2b"
    assert r.metadata["revision"] and r.metadata["source_format"] == "gemma_scope"


def test_sparsify_layout_by_repo_id(hub):
    snap = snapshot(hub, "someone/sae-tiny")
    W = write_sparsify(snap / "layers.2", d_in=16, d_sae=64, k=5)
    (snap / "config.json").write_text(json.dumps({"model": "EleutherAI/pythia-70m"}))
    sae = sae_lab.load_sae("someone/sae-tiny:layers.2")
    x = torch.randn(40, 16, generator=torch.Generator().manual_seed(4))
    z, x_hat = sparsify_reference(W, 5, x)
    assert torch.allclose(sae.encode(x), z, atol=1e-5) and torch.allclose(sae(x), x_hat, atol=1e-5)
    assert sae.architecture == "topk" and sae.cfg.k == 5 and sae.cfg.hook_name == "blocks.2.hook_resid_post"
    assert sae.model_name == "EleutherAI/pythia-70m"


def test_sparsify_transcoder_is_refused(hub):
    write_sparsify(snapshot(hub, "someone/tc") / "layers.1.mlp", 8, 16, 2, transcode=True)
    with pytest.raises(ConfigError, match="transcode"):
        sae_lab.load_sae("someone/tc", sae_id="layers.1.mlp")


def test_saelens_layout_release_knows_its_model(hub):
    from sae_lab.saedir import SAEDir

    folder = snapshot(hub, "jbloom/GPT2-Small-SAEs-Reformatted") / "blocks.8.hook_resid_pre"
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(5)
    save_file(
        {
            "W_enc": torch.randn(16, 32, generator=g),
            "b_enc": torch.randn(32, generator=g),
            "W_dec": torch.randn(32, 16, generator=g),
            "b_dec": torch.randn(16, generator=g),
        },
        str(folder / "sae_weights.safetensors"),
    )
    (folder / "cfg.json").write_text(
        json.dumps(
            {
                "d_in": 16,
                "d_sae": 32,
                "hook_name": "blocks.8.hook_resid_pre",
                "model_name": "gpt2-small",
                "apply_b_dec_to_input": True,
            }
        )
    )
    [r] = resolve_release("gpt2-small-res-jb", "blocks.8.hook_resid_pre")
    x = torch.randn(8, 16)
    assert torch.equal(r.sae(x), SAEDir(folder).load()(x)) and r.model == "gpt2"
    assert model_names.model_for(r.directory, None) == "gpt2"
    assert model_names.model_for(r.directory, "openai-community/gpt2") == "openai-community/gpt2"  # same model
    with pytest.raises(ConfigError, match="does not match the model"):
        model_names.model_for(r.directory, "embedded")


def test_offline_without_cache_names_the_repo_and_how_to_download(hub):
    with pytest.raises(HubUnavailable) as e:
        sae_lab.load_sae("gemma-scope-2b-pt-res", sae_id=GS_ID)
    for words in (GS_REPO, f"--include '{GS_ID}/*'", "hf download", "HF_HUB_OFFLINE=1"):
        assert words in str(e.value)


def test_cli_offline_error_is_one_message(hub, capsys):
    assert cli(["eval", f"gemma-scope-2b-pt-res:{GS_ID}"]) == 1
    err = capsys.readouterr().err
    assert GS_REPO in err and "hf download" in err and "Traceback" not in err
    assert cli(["eval", f"gemma-scope-2b-pt-rse:{GS_ID}"]) == 2  # a misspelt release: did-you-mean, not "no dir"
    assert "did you mean gemma-scope-2b-pt-res" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, sae_id, words",
    [
        ("gemma-scope-2b-pt-rse", GS_ID, ["unknown SAE release", "did you mean gemma-scope-2b-pt-res"]),
        ("gemma-scope-2b-pt-res", None, ["holds several SAEs", "gemma-scope-2b-pt-res:layer_"]),
        ("gemma-scope-2b-pt-res", "layer_30/width_16k/average_l0_5", ["has no SAE", "layer_12/width_16k"]),
        ("gpt2-small-res-jb", "blocks.8.hook_resid_post", ["has no SAE", "Did you mean", "blocks.8.hook_resid_pre"]),
    ],
)
def test_bad_names_are_explained(hub, name, sae_id, words):
    with pytest.raises(ConfigError) as e:
        resolve_release(name, sae_id)
    for w in words:
        assert w in str(e.value)


def test_installed_saelens_registry_is_read_without_importing_it(hub, tmp_path, monkeypatch):
    import importlib

    pkg = tmp_path / "site" / "sae_lens"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('sae_lens must not be imported')\n")
    (pkg / "pretrained_saes.yaml").write_text(
        "their-res:\n  conversion_func: gemma_2\n  model: gemma-2-2b\n  repo_id: them/their-res\n  saes:\n"
        "  - id: layer_4/width_16k/canonical\n    path: layer_4/width_16k/average_l0_9\n"
        "their-clt:\n  conversion_func: mntss_clt_layer_transcoder\n  model: x\n  repo_id: them/clt\n  saes: []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    params = gemma_scope_params(8, 16, seed=6)
    write_gemma_scope(snapshot(hub, "them/their-res") / "layer_4/width_16k/average_l0_9", params)
    [r] = resolve_release("their-res", "layer_4/width_16k/can*")  # a glob over the listed ids
    assert r.metadata["registry"].startswith("sae-lens") and r.sae.cfg.hook_name == "blocks.4.hook_resid_post"
    assert "sae_lens" not in sys.modules
    with pytest.raises(ConfigError, match="unknown SAE release 'their-clt'"):  # a conversion sae-lab lacks
        resolve_release("their-clt", "a")


def test_conversion_is_kept_and_redone_when_the_source_changes(hub):
    folder = snapshot(hub, GS_REPO) / GS_ID
    write_gemma_scope(folder, gemma_scope_params(8, 16))
    [a] = resolve_release("gemma-scope-2b-pt-res", GS_ID)
    (a.directory / "eval.json").write_text("{}")
    [b] = resolve_release("gemma-scope-2b-pt-res", GS_ID)
    assert (b.directory / "eval.json").is_file()  # reused: eval/analyze results beside it stay
    write_gemma_scope(folder, gemma_scope_params(8, 24, seed=9))
    [c] = resolve_release("gemma-scope-2b-pt-res", GS_ID)
    assert c.sae.cfg.d_sae == 24 and not (c.directory / "eval.json").exists()  # stale results are dropped


def test_cli_eval_by_release_name_uses_the_recorded_model(hub, tmp_path, monkeypatch, tiny_model_dir, capsys):
    """`sae-lab eval RELEASE:SAE_ID` with no --model runs the model the release names (here a local tiny model);
    a contradicting --model is refused before any model loads."""
    params = gemma_scope_params(64, 128, seed=7)
    params["threshold"][:] = 0.01
    write_gemma_scope(snapshot(hub, "me/tiny-scope") / "layer_1", params)
    reg = tmp_path / "r.yaml"
    reg.write_text(
        f"tiny-scope:\n  repo_id: me/tiny-scope\n  model: {tiny_model_dir}\n  conversion_func: gemma_2\n"
        "  saes:\n  - id: layer_1\n    path: layer_1\n"
    )
    monkeypatch.setenv("SAE_LAB_RELEASES", str(reg))
    # the hook from the folder name needs res/att/mlp in the repo: this repo says none, so it is refused clearly
    assert cli(["eval", "tiny-scope:layer_1", "n_tokens=128", "data.context_length=32"]) == 2
    assert "cannot tell the hook" in capsys.readouterr().err
    write_gemma_scope(snapshot(hub, "me/tiny-scope-res") / "layer_1", params)
    reg.write_text(reg.read_text().replace("me/tiny-scope\n", "me/tiny-scope-res\n"))
    assert cli(["eval", "tiny-scope:layer_1", "--model", "gpt2"]) == 2
    assert "does not match the model" in capsys.readouterr().err
    assert cli(["eval", "tiny-scope:layer_1", "n_tokens=128", "data.context_length=32", "batch_size=2"]) == 0
    [r] = resolve_release("tiny-scope", "layer_1")
    rec = json.loads((r.directory / "eval.json").read_text())
    assert rec["metrics"]["tokens"] > 0 and np.isfinite(rec["metrics"]["fvu"])


def test_jumprelu_is_inference_only():
    from sae_lab.saes import SAEConfig, build_sae, registered_names

    sae = build_sae(SAEConfig(architecture="jumprelu", d_in=8, d_sae=16))
    assert "jumprelu" not in registered_names()  # not offered for training
    with pytest.raises(ConfigError, match="inference-only"):
        sae.training_forward(torch.randn(4, 8))
    with pytest.raises(ConfigError, match="inference-only"):
        sae.check_batch_size(4)


def test_jumprelu_save_load_and_fold(tmp_path):
    from sae_lab.saedir import SAEDir
    from sae_lab.saes import SAEConfig, build_sae

    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="jumprelu", d_in=8, d_sae=16))
    with torch.no_grad():
        sae.threshold.uniform_(0.1, 0.5)
        sae.b_enc.normal_(0, 0.3)
        sae.b_dec.normal_(0, 0.3)
    x, s = torch.randn(32, 8), 2.5
    SAEDir(tmp_path / "a").save(sae)
    back = SAEDir(tmp_path / "a").load()
    assert type(back) is type(sae) and torch.equal(back(x), sae(x))
    SAEDir(tmp_path / "f").save(sae, fold_scale=s)
    assert torch.allclose(SAEDir(tmp_path / "f").load().encode(x), sae.encode(s * x) / s, atol=1e-5)


def test_dashboard_opens_a_release_and_refuses_a_contradicting_model(hub):
    from sae_lab.dashboard import dashboard_command
    from sae_lab.workspace import Workspace

    write_gemma_scope(snapshot(hub, GS_REPO) / GS_ID, gemma_scope_params(8, 16))
    cmd, _, _ = dashboard_command([f"gemma-scope-2b-pt-res:{GS_ID}"])
    [r] = resolve_release("gemma-scope-2b-pt-res", GS_ID)
    assert cmd[cmd.index("--") + 1] == str(r.directory.resolve())
    ws = Workspace([r.directory])
    assert ws.model_name(ws.entries()[0], None) == "google/gemma-2-2b"  # no --model needed
    with pytest.raises(ConfigError, match="does not match the model"):
        dashboard_command([f"gemma-scope-2b-pt-res:{GS_ID}"], model="gpt2")


@pytest.mark.embedded
def test_gemma_scope_layout_sae_by_name_on_the_embedded_model(embedded_model, hub, tmp_path, monkeypatch):
    """A Gemma-Scope-layout SAE for the embedded model (d_model 576), loaded by name from the local HF cache with
    the model its release names, spliced into the real model: its features are the published definition applied
    to the model's activations, and with the error term the logits are the clean model's."""
    from sae_lab.circuits import Spliced

    m, hook = embedded_model, "blocks.5.hook_resid_post"
    monkeypatch.setenv("SAE_LAB_CACHE", str(tmp_path / "sae_lab_cache"))  # the model is loaded: convert elsewhere
    params = gemma_scope_params(m.d_model, 1024, seed=11)
    params["threshold"][:] = np.random.default_rng(0).uniform(0.5, 2.0, 1024)
    write_gemma_scope(snapshot(hub, "me/smol-scope-res") / "layer_5/width_1k/average_l0_x", params)
    reg = tmp_path / "r.yaml"
    reg.write_text(
        "smol-scope-res:\n  repo_id: me/smol-scope-res\n  model: embedded\n  conversion_func: gemma_2\n"
        "  saes:\n  - id: layer_5\n    path: layer_5/width_1k/average_l0_x\n"
    )
    monkeypatch.setenv("SAE_LAB_RELEASES", str(reg))
    sae = sae_lab.load_sae("smol-scope-res:layer_5")
    assert sae.model_name == "embedded" and sae.cfg.hook_name == hook and sae.cfg.d_in == 576
    prompt = "The capital of France is Paris, and the capital of Italy is Rome."
    with Spliced(m, [sae], error_term=True) as s:
        out = s.run(prompt)
    with torch.inference_mode():
        clean, cache = m.bridge.run_with_cache(out.token_ids[None], names_filter=[hook])
    f, _ = gemma_scope_reference(params, cache[hook][0].double().numpy())
    z = out.features[sae.name].double().numpy()
    active = f > 0
    assert active.sum() > 10 and (~active).sum() > 10  # some latents fire on real activations, most do not
    assert np.abs(z - f).max() < 1e-3 * max(1.0, np.abs(f).max())  # float32 vs float64 on norms up to ~1e3
    assert torch.allclose(out.logits, clean[0], atol=1e-3)
