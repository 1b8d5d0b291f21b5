"""The run config and `sae-lab train`: bad input is refused before training, with a clear message."""

import shutil

import pytest

from sae_lab.activations.cache_format import CacheError
from sae_lab.cli import main as cli_main
from sae_lab.configbase import ConfigError, load_config
from sae_lab.pipeline import RunConfig, sae_configs, train_run

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture
def cache(tiny_cache):
    """The session's tiny cache (read only: tests that damage a cache copy it first)."""
    return tiny_cache


def run_cfg(run_dir, cache, *extra):
    return load_config(
        RunConfig,
        None,
        [
            f"run_dir={run_dir}",
            f"cache.path={cache}",
            f"activations.hooks=[{HOOK}]",
            "saes=[{architecture: topk, d_sae: 128, k: 8}]",
            "train.batch_size=64",
            "train.total_tokens=640",
            "train.progress=false",
            *extra,
        ],
    )


def test_train_from_cache_fills_d_in_and_hook(cache, tmp_path):
    cfg = run_cfg(tmp_path / "run", cache)
    result = train_run(cfg)
    assert result.status == "done" and result.tokens_seen == 640
    (sae_cfg,) = sae_configs(cfg, 64)
    assert sae_cfg.d_in == 64 and sae_cfg.hook_name == HOOK
    assert (tmp_path / "run" / "saes" / "topk_k8" / "sae_weights.safetensors").is_file()


def test_missing_cache_is_refused_before_training(tmp_path, capsys):
    args = [
        "train",
        f"run_dir={tmp_path / 'run'}",
        f"cache.path={tmp_path / 'nope'}",
        "saes=[{architecture: topk, d_sae: 128, k: 8}]",
    ]
    assert cli_main(args) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_corrupt_cache_is_refused_naming_the_shard(cache, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(cache, bad)
    victim = bad / "shards" / "000002" / "tokens.npy"
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CacheError, match="shard 000002: tokens.npy is corrupt"):
        train_run(run_cfg(tmp_path / "run", bad))
    assert not (tmp_path / "run").exists()


def test_hook_and_d_in_mismatches_are_refused(cache, tmp_path):
    with pytest.raises(ConfigError, match="hook: 'blocks.2.hook_resid_post' is not among .* the cache .*" + HOOK):
        train_run(run_cfg(tmp_path / "a", cache, "hook=blocks.2.hook_resid_post"))
    with pytest.raises(ConfigError, match="d_in"):
        train_run(run_cfg(tmp_path / "b", cache, "saes=[{architecture: topk, d_in: 576, d_sae: 1024, k: 8}]"))
    with pytest.raises(ConfigError, match="hook"):
        train_run(
            run_cfg(
                tmp_path / "c", cache, "saes=[{architecture: topk, hook_name: blocks.3.hook_mlp_out, d_sae: 128, k: 8}]"
            )
        )
    with pytest.raises(ConfigError, match="k"):
        train_run(run_cfg(tmp_path / "d", cache, "saes=[{architecture: topk, d_sae: 16, k: 32}]"))


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trian'.*Did you mean 'train'"):
        load_config(RunConfig, None, ["run_dir=x", "saes=[{architecture: topk}]", "trian.lr=1"])
