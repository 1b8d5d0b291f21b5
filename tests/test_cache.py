import errno
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cache_helpers import all_tokens, cache_config, shard_digests
from sae_lab.activations import cache_format as fmt
from sae_lab.activations.cache_reader import ActivationCache, verify_cache
from sae_lab.activations.cache_writer import build_cache
from sae_lab.activations.hooks import HookNameError
from sae_lab.cli import main as cli_main
from sae_lab.data.packing import iter_contexts
from sae_lab.fileio import is_temp_name

HOOKS = ("blocks.1.hook_resid_post", "blocks.2.attn.hook_z")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("cache") / "c"
    build_cache(cache_config(root, HOOKS, storage_dtype="float32"), model=tiny_model, progress=False)
    return root


def test_cached_activations_equal_a_direct_forward(tiny_cache, tiny_model):
    cache = ActivationCache(tiny_cache, verify="full")
    tokens = all_tokens(cache)
    assert tokens.shape == (64, 32) and cache.manifest["status"] == "complete"
    with torch.no_grad():
        _, direct = tiny_model.bridge.run_with_cache(torch.as_tensor(tokens[:8], dtype=torch.long))
    for hook in HOOKS:
        want = direct[hook].reshape(8, 32, -1)
        assert torch.allclose(cache.acts(0, hook), want, atol=1e-5)


def test_manifest_records_what_a_user_needs(tiny_cache, tiny_model):
    m = json.loads((tiny_cache / "manifest.json").read_text())
    assert m["model"]["weights_sha256"] == tiny_model.weights_hash
    assert set(m["hooks"]) == set(HOOKS) and m["context_length"] == 32
    assert m["totals"]["tokens"] == 64 * 32
    assert m["totals"]["excluded_special"] >= 64  # at least every BOS
    assert all(len(r["sha256"]) == 1 + 2 * len(HOOKS) for r in m["shards"])
    stats = m["hooks"][HOOKS[0]]["stats"]
    assert stats["norm_scale"] > 0 and stats["median_norm"] > 0


def test_contexts_match_the_packed_stream(tiny_cache, tiny_model):
    cfg = cache_config(tiny_cache, HOOKS)
    expected = np.stack(list(iter_contexts(cfg.data, tiny_model.tokenizer)))
    assert np.array_equal(all_tokens(ActivationCache(tiny_cache)), expected)


def test_shuffled_batches_are_normalised_deterministic_and_cover_each_row_once(tiny_cache):
    src = ActivationCache(tiny_cache).source(HOOKS[0], buffer_tokens=512)
    n = src.n_tokens
    assert src.shards_per_window == 2  # a bounded window of 2 shards of 256 tokens
    it = src.iter_batches(n // 4, seed=3)
    epoch = torch.cat([next(it) for _ in range(4)])
    assert epoch.shape == (n - n % 4, src.d_in)
    again = torch.cat([b for _, b in zip(range(4), src.iter_batches(n // 4, seed=3))])
    other = next(src.iter_batches(n // 4, seed=4))
    assert torch.equal(epoch, again) and not torch.equal(epoch[: n // 4], other)
    rows = torch.cat(
        [
            ActivationCache(tiny_cache)
            .acts(i, HOOKS[0])
            .reshape(-1, src.d_in)[
                torch.from_numpy(np.array(ActivationCache(tiny_cache).keep(i, HOOKS[0])).reshape(-1))
            ]
            for i in range(8)
        ]
    )
    rows = rows * src.norm_scale
    # an epoch yields each cached row at most once (as a multiset; identical rows do occur)
    from collections import Counter

    def key(t):
        return Counter(map(tuple, (t[:, :4] * 1e4).round().long().tolist()))

    have, cached = key(epoch), key(rows)
    assert all(cached[k] >= c for k, c in have.items())
    assert abs(rows.norm(dim=-1).mean().item() - src.d_in**0.5) < 0.15 * src.d_in**0.5


def test_skip_batches_resumes_exactly_across_epochs(tiny_cache):
    src = ActivationCache(tiny_cache).source(HOOKS[1], buffer_tokens=512)
    full = [b for _, b in zip(range(40), src.iter_batches(100, seed=1))]
    resumed = [b for _, b in zip(range(10), src.iter_batches(100, seed=1, skip_batches=30))]
    assert all(torch.equal(a, b) for a, b in zip(full[30:], resumed))


@pytest.mark.parametrize("part", ["whole", "train", "held"])
def test_a_cache_within_one_window_is_read_once_and_gives_the_same_batches(tiny_cache, part, monkeypatch):
    """One window holds every shard: the rows are read once, not once per epoch, and every batch equals the
    windowed reader's (across epochs, their carried-over rows, skips and both parts of a calibration split)."""
    src = ActivationCache(tiny_cache, verify="none").source(HOOKS[1], buffer_tokens=1 << 17)
    src = {"whole": src, "train": src.split_holdout(300)[0], "held": src.split_holdout(300)[1]}[part]
    assert len(src.cache.shards) <= src.shards_per_window
    batch = 96 if src.n_tokens > 300 else 64  # not a divisor: rows carry over between epochs
    n = 4 * src.n_tokens // batch
    windowed = [b for _, b in zip(range(n), src._window_batches(batch, 2, 0, "cpu"))]
    reads = []
    load = src._load_rows
    monkeypatch.setattr(src, "_load_rows", lambda ids, out: (reads.append(len(ids)), load(ids, out)))
    resident = [b for _, b in zip(range(n), src.iter_batches(batch, seed=2))]
    assert reads == [src.n_tokens]
    assert all(torch.equal(a, b) for a, b in zip(windowed, resident))
    skipped = [b for _, b in zip(range(5), src.iter_batches(batch, seed=2, skip_batches=n - 5))]
    assert all(torch.equal(a, b) for a, b in zip(windowed[-5:], skipped))


@pytest.mark.parametrize("n, batch, buffer", [(100, 100, 1 << 17), (250, 64, 1 << 17), (64, 32, 256)])
def test_head_reads_exactly_the_first_rows_of_the_stream(tiny_cache, n, batch, buffer):
    full = ActivationCache(tiny_cache, verify="none").source(HOOKS[1], buffer_tokens=buffer)
    for src in (full, full.split_holdout(128)[0]):  # also the training part of a calibration split
        it = src.iter_batches(batch, seed=5)
        expected = torch.cat([next(it) for _ in range(-(-n // batch))])[:n]
        head = src.head(n, batch, seed=5)
        assert head is not None and torch.equal(head, expected)
        assert src.head(src.n_tokens + batch, batch, seed=5) is None  # beyond the first window: caller falls back


def test_resume_reuses_complete_shards_and_refuses_other_configs(tiny_cache, tmp_path, tiny_model):
    before = {p.name: p.stat().st_mtime_ns for p in (tiny_cache / "shards").iterdir()}
    build_cache(cache_config(tiny_cache, HOOKS, storage_dtype="float32"), model=tiny_model, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (tiny_cache / "shards").iterdir()} == before
    with pytest.raises(fmt.CacheError, match="different config.*storage_dtype"):
        build_cache(cache_config(tiny_cache, HOOKS, storage_dtype="float16"), model=tiny_model, progress=False)
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(fmt.CacheError, match="not empty"):
        build_cache(cache_config(tmp_path, HOOKS), model=tiny_model, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "precious"


KILLER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {tests!r})
    from cache_helpers import cache_config
    from tiny import tiny_llama
    from sae_lab.activations import cache_format as fmt
    from sae_lab.activations.cache_writer import build_cache
    calls = {{"n": 0}}
    real = fmt.sha256_file
    def dying_hash(path):
        calls["n"] += 1
        if calls["n"] == {kill_at}:
            os.kill(os.getpid(), 9)  # kill -9 in the middle of writing a shard
        return real(path)
    fmt.sha256_file = dying_hash
    build_cache(cache_config({out!r}, {hooks!r}, storage_dtype="float32"), model=tiny_llama(), progress=False)
""")


def test_resume_after_kill_9_gives_the_same_cache(tiny_cache, tmp_path):
    out = tmp_path / "killed"
    script = KILLER.format(tests=str(Path(__file__).parent), kill_at=8, out=str(out), hooks=HOOKS)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]
    partial = [p.name for p in (out / "shards").iterdir()]
    assert any(is_temp_name(n) for n in partial) and 0 < len([n for n in partial if n.isdigit()]) < 8
    assert verify_cache(out)  # incomplete cache is reported as such
    script = KILLER.format(tests=str(Path(__file__).parent), kill_at=-1, out=str(out), hooks=HOOKS)
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    assert shard_digests(out) == shard_digests(tiny_cache)
    assert not [p for p in (out / "shards").iterdir() if is_temp_name(p.name)]
    assert verify_cache(out) == []


def test_corruption_is_detected_and_named(tiny_cache, tmp_path, capsys):
    import shutil

    root = tmp_path / "c"
    shutil.copytree(tiny_cache, root)
    victim = root / "shards" / "000003" / "blocks.1.hook_resid_post.npy"
    data = bytearray(victim.read_bytes())
    data[-7] ^= 0xFF
    victim.write_bytes(bytes(data))
    (root / "shards" / "000005" / "tokens.npy").unlink()
    problems = verify_cache(root)
    assert any("000003" in p and "corrupt" in p for p in problems)
    assert any("000005" in p and "missing file tokens.npy" in p for p in problems)
    assert cli_main(["verify", str(root)]) == 1
    assert "000003" in capsys.readouterr().out
    with pytest.raises(fmt.CacheError, match="000003"):
        ActivationCache(root, verify="full")
    assert cli_main(["verify", str(tiny_cache)]) == 0


def test_disk_full_leaves_a_resumable_cache(tmp_path, tiny_model, monkeypatch):
    real_save = np.save
    calls = {"n": 0}

    def full_disk(f, arr, *a, **k):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(f, arr, *a, **k)

    monkeypatch.setattr(np, "save", full_disk)
    cfg = cache_config(tmp_path / "c", HOOKS[:1])
    with pytest.raises(fmt.CacheError, match="disk full while writing shard.*run the same command again"):
        build_cache(cfg, model=tiny_model, progress=False)
    monkeypatch.setattr(np, "save", real_save)
    assert not [p for p in (tmp_path / "c" / "shards").iterdir() if is_temp_name(p.name)]
    build_cache(cfg, model=tiny_model, progress=False)
    assert verify_cache(tmp_path / "c") == []


def test_unknown_hook_lists_closest_names(tiny_model, tmp_path):
    with pytest.raises(HookNameError, match="blocks.1.hook_resid_post"):
        build_cache(cache_config(tmp_path / "c", ["blocks.1.hook_resid_psot"]), model=tiny_model)


def test_outlier_exclusion_is_recorded(tmp_path, tiny_model):
    root = tmp_path / "c"
    m = build_cache(
        cache_config(root, HOOKS[:1], activations={"exclude_outliers": 1.05}), model=tiny_model, progress=False
    )
    excluded = m["totals"]["excluded_outliers"][HOOKS[0]]
    kept = m["totals"]["kept_tokens"][HOOKS[0]]
    assert excluded > 0
    assert kept + excluded + m["totals"]["excluded_special"] == m["totals"]["tokens"]
    threshold = m["hooks"][HOOKS[0]]["stats"]["outlier_threshold"]
    cache = ActivationCache(root)
    acts, keep = cache.acts(0, HOOKS[0]), np.asarray(cache.keep(0, HOOKS[0]))
    assert (acts[torch.from_numpy(np.array(keep))].norm(dim=-1) <= threshold * 1.001).all()


def test_stop_at_layer_and_missing_cache_errors(tmp_path):
    from sae_lab.activations.hooks import stop_layer

    assert stop_layer(["blocks.3.hook_resid_post", "blocks.7.attn.hook_z"]) == 8
    assert stop_layer(["blocks.3.hook_resid_post", "ln_final.hook_normalized"]) is None
    with pytest.raises(fmt.CacheError, match="does not exist.*sae-lab cache"):
        ActivationCache(tmp_path / "nothing")
