"""Many hooks in one run: a source of several hooks side by side, one training pass for SAEs on every hook, globs.

The reference for one run on several hooks is the separate runs on each hook: with the same seed and the same token
positions, they must give the same SAEs bit for bit.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cache_helpers import cache_config
from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.activations.cache_writer import build_cache
from sae_lab.activations.hooks import HookNameError, expand_hooks
from sae_lab.activations.source import hook_parts
from sae_lab.activations.stream import StreamingSource
from sae_lab.configbase import ConfigError, build_config
from sae_lab.pipeline import RunConfig, resolve_hooks, sae_configs, train_run
from sae_lab.training import TrainConfig, train_sweep

H0, H1, H2 = (f"blocks.{i}.hook_resid_post" for i in range(3))


@pytest.fixture(scope="module")
def two_hook_cache(tmp_path_factory, tiny_model):
    """A tiny cache of two layers (no outlier exclusion: both hooks keep the same positions)."""
    root = tmp_path_factory.mktemp("multi") / "cache"
    build_cache(cache_config(root, [H0, H1], max_tokens=4096), model=tiny_model, progress=False)
    return root


@pytest.fixture(scope="module")
def outlier_cache(tmp_path_factory, tiny_model):
    """Two layers with outliers excluded per hook: the hooks keep different positions."""
    root = tmp_path_factory.mktemp("multi_outliers") / "cache"
    cfg = cache_config(root, [H0, H2], max_tokens=2048, activations={"exclude_outliers": 1.1})
    build_cache(cfg, model=tiny_model, progress=False)
    return root


def test_globs_expand_in_the_models_order_and_a_glob_matching_nothing_names_close_hooks(tiny_model):
    names = tiny_model.hook_names
    assert expand_hooks(["blocks.*.hook_resid_post"], names) == [f"blocks.{i}.hook_resid_post" for i in range(4)]
    assert expand_hooks(["blocks.[12].hook_mlp_out", H0], names) == [
        "blocks.1.hook_mlp_out",
        "blocks.2.hook_mlp_out",
        H0,
    ]
    with pytest.raises(HookNameError, match=r"'blocks.\*.hook_resid_pots' matches no hook.*hook_resid_post"):
        expand_hooks(["blocks.*.hook_resid_pots"], names)


def test_a_source_of_two_hooks_holds_each_hooks_rows_at_the_same_positions(two_hook_cache):
    cache = ActivationCache(two_hook_cache)
    both = cache.source([H0, H1])
    one, two = cache.source(H0), cache.source(H1)
    parts = hook_parts(both)
    assert list(parts) == [H0, H1] and both.d_in == one.d_in + two.d_in and both.n_tokens == one.n_tokens
    assert parts[H1].norm_scale == two.norm_scale != one.norm_scale
    with pytest.raises(AttributeError, match="several hooks"):
        both.norm_scale
    for x, a, b in zip(both.iter_batches(256, seed=3), one.iter_batches(256, seed=3), two.iter_batches(256, seed=3)):
        assert torch.equal(parts[H0].take(x), a) and torch.equal(parts[H1].take(x), b)
        break
    skipped = next(both.iter_batches(256, seed=3, skip_batches=5))
    assert torch.equal(parts[H1].take(skipped), next(two.iter_batches(256, seed=3, skip_batches=5)))


def test_hooks_that_keep_different_positions_share_the_positions_both_keep(outlier_cache):
    cache = ActivationCache(outlier_cache)
    both = cache.source([H0, H2])
    keep = sum(
        int((np.asarray(cache.keep(i, H0)) & np.asarray(cache.keep(i, H2))).sum()) for i in range(len(cache.shards))
    )
    assert both.n_tokens == keep < min(cache.source(H0).n_tokens, cache.source(H2).n_tokens)
    raw = {h: torch.cat([cache.acts(i, h).reshape(-1, 64) for i in range(len(cache.shards))]) for h in (H0, H2)}
    x = next(both.iter_batches(both.n_tokens, seed=0))  # every kept row once: match them as sets of row norms
    for h, part in hook_parts(both).items():
        thr = cache.hook_info(h)["stats"]["outlier_threshold"]
        assert (part.take(x) / part.norm_scale).norm(dim=-1).max() <= thr * (1 + 1e-3)
        assert raw[h].norm(dim=-1).max() > thr  # the hook had outliers to exclude


def _train(source, saes, run_dir, **train):
    cfg = TrainConfig(batch_size=128, total_tokens=128 * 12, log_every_steps=4, progress=False, **train)
    return train_sweep(saes, source, cfg, run_dir)


def _sae(hook: str, name: str, arch: str = "topk") -> dict:
    return dict(architecture=arch, name=name, d_in=64, d_sae=128, k=8, hook_name=hook)


def test_one_run_on_two_hooks_equals_two_separate_runs_bit_for_bit(two_hook_cache, tmp_path):
    from sae_lab.saes import SAEConfig

    cache = ActivationCache(two_hook_cache)
    saes = [SAEConfig(**_sae(H0, "a")), SAEConfig(**_sae(H1, "b")), SAEConfig(**_sae(H1, "c", "matching_pursuit"))]
    both = _train(cache.source([H0, H1]), saes, tmp_path / "both")
    alone = {
        "a": _train(cache.source(H0), saes[:1], tmp_path / "a"),
        "b": _train(cache.source(H1), saes[1:2], tmp_path / "b"),
        "c": _train(cache.source(H1), saes[2:], tmp_path / "c"),
    }
    for name, result in alone.items():
        together = load_file(both.run_dir / "saes" / name / "sae_weights.safetensors")
        separate = load_file(result.run_dir / "saes" / name / "sae_weights.safetensors")
        assert together.keys() == separate.keys()
        assert all(torch.equal(together[k], separate[k]) for k in together), name
    assert both.results["a"].metrics["fvu"] == alone["a"].results["a"].metrics["fvu"]


def test_a_paused_run_on_two_hooks_resumes_to_the_uninterrupted_result(two_hook_cache, tmp_path):
    from sae_lab.saes import SAEConfig

    source = ActivationCache(two_hook_cache).source([H0, H1])
    saes = [SAEConfig(**_sae(H0, "a")), SAEConfig(**_sae(H1, "b"))]
    full = _train(source, saes, tmp_path / "full")
    cfg = TrainConfig(batch_size=128, total_tokens=128 * 12, log_every_steps=4, progress=False)
    paused = train_sweep(saes, source, cfg, tmp_path / "resumed", stop_after_tokens=128 * 5)
    assert paused.status == "stopped"
    resumed = train_sweep(saes, source, cfg, tmp_path / "resumed", resume="must")
    for name in ("a", "b"):
        assert torch.equal(resumed.saes[name].W_dec, full.saes[name].W_dec)


def test_an_sae_whose_hook_the_source_lacks_is_refused_naming_the_hooks(two_hook_cache, tmp_path):
    from sae_lab.saes import SAEConfig

    source = ActivationCache(two_hook_cache).source([H0, H1])
    with pytest.raises(ConfigError, match=f"hook_name='{H2}' but the activation source holds the hooks {H0}, {H1}"):
        _train(source, [SAEConfig(**_sae(H2, "x"))], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _run_config(tmp_path: Path, model_dir: Path, **over) -> RunConfig:
    data = {"source": "embedded", "context_length": 32, "max_tokens": 4096}
    cfg = {
        "run_dir": str(tmp_path / "run"),
        "model": {"name": str(model_dir)},
        "data": data,
        "activations": {"hooks": ["blocks.[0-2].hook_resid_post"], "batch_size": 8, "norm_sample_contexts": 8},
        "cache": None,
        "train": {"batch_size": 128, "total_tokens": 1280, "progress": False, "b_dec_init_tokens": 128},
        "saes": [
            {"architecture": "topk", "expansion_factor": 2, "k": 8},
            {"architecture": "topk", "k": 4, "d_sae": 64, "hook_name": H1},
        ],
        "eval": {"data": {**data, "split": "validation"}, "n_tokens": 512, "batch_size": 4},
        "analyze": {"data": {**data, "split": "validation"}, "n_tokens": 512, "batch_size": 4, "top_k": 4},
    }
    cfg.update(over)
    return build_config(RunConfig, cfg)


def test_hook_selection_names_each_sae_by_its_hook(tiny_model):
    cfg = resolve_hooks(_run_config(Path("/tmp"), Path("m")), tiny_model.hook_names)
    assert cfg.train_hooks == [H0, H1, H2] and cfg.activations.hooks == [H0, H1, H2]
    names = [(c.name, c.hook_name) for c in sae_configs(cfg, 64)]
    assert names == [(f"topk_k8.{h}", h) for h in (H0, H1, H2)] + [("topk_k4", H1)]
    only = resolve_hooks(_run_config(Path("/tmp"), Path("m"), hook="blocks.[12].*_post"), tiny_model.hook_names)
    assert only.train_hooks == [H1, H2]
    with pytest.raises(ConfigError, match="hook: 'blocks.3.hook_resid_post' is not among the run's activations.hooks"):
        resolve_hooks(_run_config(Path("/tmp"), Path("m"), hook="blocks.3.hook_resid_post"), tiny_model.hook_names)
    with pytest.raises(ConfigError, match="g-SAE.*one hook"):
        _run_config(
            Path("/tmp"), Path("m"), saes=[{"architecture": "topk", "k": 4, "d_sae": 64, "selection": "gradient"}]
        )


def test_a_stream_of_three_hooks_trains_evaluates_analyses_and_shows_every_sae(tiny_model_dir, tmp_path, monkeypatch):
    """The glob run of the pipeline from a live stream (one forward pass per batch for all three hooks), then the
    dashboard's Runs page on it."""
    from sae_lab.evaluation import analyze_run, evaluate_run
    from sae_lab.saedir import SAEDir

    cfg = _run_config(tmp_path, tiny_model_dir)
    result = train_run(cfg)
    expected = {f"topk_k8.{h}": h for h in (H0, H1, H2)} | {"topk_k4": H1}
    assert result.status == "done" and set(result.results) == set(expected)
    for name, hook in expected.items():
        assert SAEDir(tmp_path / "run" / "saes" / name).load().cfg.hook_name == hook
    summary = evaluate_run(cfg.run_dir, cfg.eval)
    assert set(summary["saes"]) == set(expected)
    assert all(0 < m["fvu"] < 1 for m in summary["saes"].values())
    analysis = analyze_run(cfg.run_dir, cfg.analyze)
    assert set(analysis["databases"]) == set(expected)
    again = train_run(cfg)  # same config: resumes the finished run, trains nothing, keeps eval.json and the DBs
    assert again.steps == result.steps and again.tokens_seen == result.tokens_seen
    from test_dashboard_app import app, messages

    at = app(monkeypatch, tmp_path / "run")
    assert not messages(at)[0]
    table = at.dataframe[0].value
    assert dict(zip(table["sae"], table["hook_name"])) == expected and table["feature_db"].all()


def test_a_stream_of_two_hooks_yields_each_hooks_rows(tiny_model, tmp_path):
    from sae_lab.activations.config import ActivationConfig
    from sae_lab.data.config import DataConfig

    data = DataConfig(source="embedded", context_length=32, max_tokens=2048)
    acts = ActivationConfig(hooks=["blocks.[01].hook_resid_post"], batch_size=4, norm_sample_contexts=8)
    both = StreamingSource(tiny_model, data, acts, acts.hooks)
    assert list(hook_parts(both)) == [H0, H1]
    one = StreamingSource(tiny_model, data, acts, H1)
    x, y = next(both.iter_batches(64, seed=1)), next(one.iter_batches(64, seed=1))
    assert torch.allclose(hook_parts(both)[H1].take(x), y, atol=1e-5)


@pytest.mark.torchrun
def test_two_ranks_train_two_hooks_like_one_process(two_hook_cache, tmp_path):
    """`torchrun --nproc_per_node 2 -m sae_lab train` of one entry on two hooks: the same SAEs as one process."""
    import yaml

    from sae_lab.configbase import load_config
    from test_ddp_training import ATOL, torchrun

    cfg = {
        "run_dir": str(tmp_path / "unused"),
        "cache": {"path": str(two_hook_cache), "buffer_tokens": 1024},
        "activations": {"hooks": ["blocks.*.hook_resid_post"]},
        "train": {"batch_size": 64, "total_tokens": 12 * 64, "lr": 3e-3, "progress": False, "device": "cpu"},
        "saes": [{"architecture": "topk", "name": "topk", "d_sae": 128, "k": 4}],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = torchrun("-m", "sae_lab", "train", str(path), f"run_dir={tmp_path / 'two'}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    with torch.random.fork_rng(devices=[]):
        train_run(load_config(RunConfig, str(path), [f"run_dir={tmp_path / 'one'}"]))
    for hook in (H0, H1):  # the glob matched the cache's two hooks
        one = load_file(tmp_path / "one" / "saes" / f"topk.{hook}" / "sae_weights.safetensors")
        two = load_file(tmp_path / "two" / "saes" / f"topk.{hook}" / "sae_weights.safetensors")
        assert all(torch.allclose(one[k], two[k], rtol=0, atol=ATOL) for k in one), hook


@pytest.mark.embedded
def test_the_embedded_model_trains_two_layers_in_one_run_from_a_glob(embedded_model, tmp_path):
    """The real SmolLM2: `blocks.[34].hook_resid_post` cached in one forward pass per batch and trained in one pass;
    every SAE is saved with its hook and reconstructs its own layer on held-out text (FVU well below 1)."""
    from sae_lab.evaluation import evaluate_run
    from sae_lab.pipeline import build_cache_for

    data = {"source": "embedded", "context_length": 64, "max_tokens": 8192}
    cfg = build_config(
        RunConfig,
        {
            "run_dir": str(tmp_path / "run"),
            "model": {"name": "embedded"},
            "data": data,
            "activations": {"hooks": ["blocks.[34].hook_resid_post"], "batch_size": 16, "norm_sample_contexts": 16},
            "cache": {"path": str(tmp_path / "cache"), "shard_contexts": 32, "verify": "quick"},
            "train": {"batch_size": 256, "total_tokens": 4096, "progress": False, "b_dec_init_tokens": 256},
            "saes": [{"architecture": "topk", "expansion_factor": 2, "k": 16}],
            "eval": {"data": {**data, "split": "validation"}, "n_tokens": 256, "batch_size": 8},
        },
    )
    build_cache_for(resolve_hooks(cfg, embedded_model.hook_names), embedded_model)
    result = train_run(cfg, model=embedded_model)
    hooks = ["blocks.3.hook_resid_post", "blocks.4.hook_resid_post"]
    assert sorted(result.results) == [f"topk_k16.{h}" for h in hooks]
    summary = evaluate_run(cfg.run_dir, cfg.eval, embedded_model)
    for h in hooks:
        assert summary["saes"][f"topk_k16.{h}"]["fvu"] < 0.5, (h, summary["saes"][f"topk_k16.{h}"]["fvu"])
    w3, w4 = (result.saes[f"topk_k16.{h}"].W_dec for h in hooks)
    assert not torch.allclose(w3, w4)
