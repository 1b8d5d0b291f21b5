"""The ground-floor helpers each concept has exactly one of: atomic writes, file hashing, the hook-name
grammar, the keep mask and the device rule."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from cache_helpers import cache_config
from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.activations.cache_writer import build_cache
from sae_lab.activations.hooks import stop_layer
from sae_lab.activations.masks import keep_mask, outlier_threshold, special_positions
from sae_lab.devices import check_available, resolve_device
from sae_lab.evaluation.config import EvalConfig
from sae_lab.fileio import atomic_path, atomic_write_text, is_temp_name, sha256_file
from sae_lab.hooknames import parse_hook
from sae_lab.models import ModelConfig
from sae_lab.saedir import SAEDir
from sae_lab.saes import SAEConfig, build_sae
from sae_lab.training import TrainConfig


# ---- atomic writes ------------------------------------------------------------------------------------
def test_atomic_text_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two" and [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_an_atomic_directory_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "d"
    with atomic_path(target, directory=True) as tmp:
        (tmp / "stale.txt").write_text("x")
        assert is_temp_name(tmp.name) and not target.exists()
    with atomic_path(target, directory=True) as tmp:
        (tmp / "nested").mkdir()
        (tmp / "nested" / "new.txt").write_text("y")
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*")) == ["nested", "nested/new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_sha256_file_matches_hashlib(tmp_path):
    data = np.random.default_rng(0).bytes(3 << 20)
    (tmp_path / "x").write_bytes(data)
    assert sha256_file(tmp_path / "x") == hashlib.sha256(data).hexdigest()


# ---- hook names ---------------------------------------------------------------------------------------
def test_parse_hook_on_every_hook_of_a_real_bridge(tiny_model):
    for name in tiny_model.hook_names:
        h = parse_hook(name)
        assert h.name == name and name.endswith(h.kind)
        if name.startswith("blocks."):
            assert h.layer == int(name.split(".")[1])
        assert h.is_attn_z == (name.startswith("blocks.") and name.endswith(".attn.hook_z"))
    z = parse_hook("blocks.2.attn.hook_z")
    assert (z.layer, z.module, z.kind, z.is_attn_z, z.is_residual) == (2, "attn", "hook_z", True, False)
    assert parse_hook("blocks.0.attn.q.hook_out").module == "attn.q"
    assert parse_hook("blocks.1.hook_mlp_out").is_residual and not parse_hook("blocks.1.mlp.hook_post").is_residual
    assert parse_hook("hook_embed").layer == -1 and parse_hook("ln_final.hook_normalized").layer is None
    assert stop_layer(["blocks.1.hook_resid_post", "blocks.0.attn.hook_z"]) == 2
    assert stop_layer(["blocks.1.hook_resid_post", "ln_final.hook_normalized"]) is None


def test_saved_cfg_json_records_the_parsed_layer(tmp_path):
    for hook, layer in (("blocks.7.attn.hook_z", 7), ("hook_embed", -1), ("tensor", -1)):
        sae = build_sae(SAEConfig(architecture="topk", d_in=8, d_sae=16, k=2, hook_name=hook))
        SAEDir(tmp_path / hook).save(sae)
        assert json.loads((tmp_path / hook / "cfg.json").read_text())["hook_layer"] == layer


# ---- the keep mask ------------------------------------------------------------------------------------
def test_training_and_evaluation_keep_the_same_positions(tiny_model, tmp_path):
    """The cache's stored keep mask equals what evaluation computes from the same tokens and threshold."""
    hook = "blocks.1.hook_resid_post"
    cfg = cache_config(
        tmp_path / "c", [hook], max_tokens=512, storage_dtype="float32", activations={"exclude_outliers": 1.3}
    )
    build_cache(cfg, model=tiny_model, progress=False)
    cache = ActivationCache(tmp_path / "c")
    threshold = cache.hook_info(hook)["stats"]["outlier_threshold"]
    eval_data = EvalConfig(data=cfg.data).data
    for shard in range(len(cache.shards)):
        tokens = np.asarray(cache.tokens(shard))
        acts = cache.acts(shard, hook)
        special = special_positions(tokens, tiny_model.tokenizer, eval_data.exclude_special)
        keep = keep_mask(acts, special, threshold).numpy()
        assert np.array_equal(keep, np.asarray(cache.keep(shard, hook)))
        assert 0 < (~keep & ~special).sum()  # the threshold really excluded some non-special positions


def test_outlier_threshold_is_a_multiple_of_the_median():
    norms = torch.tensor([1.0, 2.0, 3.0, 100.0, 4.0])
    assert outlier_threshold(norms, 2.5) == 7.5 and outlier_threshold(norms, None) is None
    acts = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [30.0, 40.0]]])  # norms 5, 1, 50
    special = np.array([[False, True, False]])
    assert keep_mask(acts, special, 7.5).tolist() == [[True, False, False]]
    assert keep_mask(acts, special, None).tolist() == [[True, False, True]]


# ---- the device rule ----------------------------------------------------------------------------------
def test_one_auto_rule_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert TrainConfig().resolved_device() == resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert TrainConfig().resolved_device() == resolve_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert TrainConfig().resolved_device() == resolve_device() == torch.device("cuda")
    assert resolve_device("auto", auto="cpu") == torch.device("cpu")  # SAEs next to their model
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_device_names_are_validated_the_same_everywhere():
    for model in (TrainConfig, ModelConfig, EvalConfig):
        with pytest.raises(ValueError, match="'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
            model(device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="train.device is 'cuda' but CUDA is not available"):
            check_available(torch.device("cuda"), "train.device")
