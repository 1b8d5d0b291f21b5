"""Issue 9, one test per example: no data loss, no wrong result reported as success, no dead end (tiny model)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from _train_helpers import planted_source, sae_cfg, train_cfg
from cache_helpers import cache_config, shard_digests
from sae_lab import load_sae
from sae_lab.activations import cache_format as fmt
from sae_lab.activations import cache_writer
from sae_lab.activations.cache_reader import ActivationCache, verify_cache
from sae_lab.activations.cache_writer import build_cache
from sae_lab.configbase import ConfigError, load_config
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.data.sources import DataSourceError, iter_documents
from sae_lab.evaluation.feature_db import FeatureDB, FeatureDBError
from sae_lab.ownership import MARKER
from sae_lab.pipeline import RunConfig, train_run
from sae_lab.rundir import RunDirError
from sae_lab.saedir import SAEDir, SAEFileError
from sae_lab.training import train_sweep
from synthetic_db import write_synthetic_db

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture
def cache(tiny_cache):
    """The session's tiny cache (read only: tests that damage a cache copy it first)."""
    return tiny_cache


def flip_byte(path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---- 1. data loss -------------------------------------------------------------------------------------


def _trained(run):
    train_sweep([sae_cfg(name="a")], planted_source(), train_cfg(total_tokens=4 * 64), run)


def test_overwrite_refuses_foreign_files_and_names_them(tmp_path):
    run = tmp_path / "run"
    _trained(run)
    (run / "notes.md").write_text("my notes")
    (run / "my_config.yaml").write_text("run_dir: .")
    with pytest.raises(RunDirError, match="'my_config.yaml', 'notes.md'"):
        train_sweep(
            [sae_cfg(name="a")], planted_source(), train_cfg(total_tokens=4 * 64), run, resume="never", overwrite=True
        )
    assert (run / "notes.md").read_text() == "my notes" and (run / "config.yaml").exists()


def test_overwrite_refuses_cwd_and_the_config_files_directory(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _trained(run)
    monkeypatch.chdir(run)
    with pytest.raises(RunDirError, match="current directory"):
        train_sweep(
            [sae_cfg(name="a")], planted_source(), train_cfg(total_tokens=4 * 64), ".", resume="never", overwrite=True
        )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RunDirError, match="holds the config file"):
        train_sweep(
            [sae_cfg(name="a")],
            planted_source(),
            train_cfg(total_tokens=4 * 64),
            run,
            resume="never",
            overwrite=True,
            config_path=run / "checkpoints" / "cfg.yaml",
        )
    assert (run / "config.yaml").exists() and any((run / "checkpoints").iterdir())


def test_overwrite_refuses_an_unmarked_directory(tmp_path):
    run = tmp_path / "run"
    _trained(run)
    (run / MARKER).unlink()
    with pytest.raises(RunDirError, match="no sae-lab run marker"):
        train_sweep(
            [sae_cfg(name="a")], planted_source(), train_cfg(total_tokens=4 * 64), run, resume="never", overwrite=True
        )


def test_overwrite_removes_only_its_own_files(tmp_path):
    run = tmp_path / "run"
    _trained(run)
    result = train_sweep(
        [sae_cfg(name="b")], planted_source(), train_cfg(total_tokens=4 * 64), run, resume="never", overwrite=True
    )
    assert result.status == "done" and not (run / "saes" / "a").exists() and (run / "saes" / "b").exists()


def test_a_kill_while_marking_the_run_directory_does_not_block_the_rerun(tmp_path):
    """A kill -9 between writing the marker's temporary and renaming it left ``..sae-lab-owned.tmpPID``."""
    run = tmp_path / "run"
    run.mkdir()
    (run / f".{MARKER}.tmp4242").write_text('{"owner": "sae-lab"')
    result = train_sweep([sae_cfg(name="a")], planted_source(), train_cfg(total_tokens=4 * 64), run)
    assert result.status == "done" and (run / MARKER).exists()
    assert not list(run.glob(f".{MARKER}.tmp*"))


def test_sae_dir_with_foreign_files_is_not_replaced(tmp_path):
    run = tmp_path / "run"
    _trained(run)
    (run / "saes" / "a" / "README.md").write_text("mine")
    (run / "run.json").unlink()
    for p in (run / "checkpoints").iterdir():  # force a retrain that saves saes/a again
        p.unlink()
    with pytest.raises(Exception, match="README.md"):
        train_sweep([sae_cfg(name="a")], planted_source(), train_cfg(total_tokens=4 * 64), run)
    assert (run / "saes" / "a" / "README.md").read_text() == "mine"


def test_cache_refuses_a_directory_with_user_files(tmp_path, tiny_model):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(fmt.CacheError, match="notes.txt"):
        build_cache(cache_config(tmp_path, [HOOK]), model=tiny_model, progress=False)
    assert (tmp_path / "notes.txt").read_text() == "precious"


# ---- 2. wrong results reported as success ---------------------------------------------------------------


@pytest.mark.parametrize("layout", ["ours", "saelens"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused_naming_file_and_tensor(tmp_path, layout, bad):
    from eval_helpers import sae

    d = tmp_path / "sae"
    s = sae("topk", HOOK)
    if layout == "ours":  # saved by sae-lab with its checksums: the values themselves are refused
        with torch.no_grad():
            s.W_dec[3, 5] = bad
        SAEDir(d).save(s)
    else:
        SAEDir(d).save(s)
        (d / "sae_lab.json").unlink()
        (d / "sae_lab_state.safetensors").unlink()
        weights = load_file(str(d / "sae_weights.safetensors"))
        weights["W_dec"][3, 5] = bad
        save_file(weights, str(d / "sae_weights.safetensors"))
    with pytest.raises(SAEFileError, match=r"sae_weights.safetensors': tensor 'W_dec' holds 1 NaN/inf"):
        load_sae(d)


def test_truncated_weights_and_broken_json_are_named(tmp_path):
    from eval_helpers import sae

    d = tmp_path / "sae"
    SAEDir(d).save(sae("topk", HOOK))
    (d / "sae_lab.json").write_text('{"config": ')
    with pytest.raises(SAEFileError, match="sae_lab.json"):
        load_sae(d)
    SAEDir(d).save(sae("topk", HOOK))
    w = d / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:-50])
    with pytest.raises(SAEFileError, match="sae_weights.safetensors' is not a readable safetensors"):
        load_sae(d)


def test_model_dtype_is_part_of_the_cache_identity(tmp_path, tiny_model):
    root = tmp_path / "c"
    build_cache(cache_config(root, [HOOK]), model=tiny_model, progress=False)
    with pytest.raises(fmt.CacheError, match="differs in: model_dtype"):
        build_cache(cache_config(root, [HOOK], model={"dtype": "bfloat16"}), model=tiny_model, progress=False)
    identity = json.loads((root / "manifest.json").read_text())["identity"]
    for key in (
        "model_name",
        "model_dtype",
        "model_weights_sha256",
        "hooks",
        "data",
        "storage_dtype",
        "normalize",
        "norm_sample_contexts",
        "exclude_outliers",
    ):
        assert key in identity
    assert identity["data"]["context_length"] == 32 and "separator" in identity["data"]


def _run(run_dir, cache, *extra):
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


@pytest.mark.parametrize("field", ["data.context_length=64", "data.max_tokens=1024", "activations.exclude_outliers=10"])
def test_train_refuses_a_run_config_that_contradicts_the_cache(cache, tmp_path, field):
    with pytest.raises(ConfigError, match=field.split("=")[0].replace("activations.", "")):
        train_run(_run(tmp_path / "run", cache, field))
    assert not (tmp_path / "run").exists()


def test_train_records_the_caches_settings_when_the_run_config_leaves_them_out(cache, tmp_path):
    train_run(_run(tmp_path / "run", cache))
    import yaml

    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert recorded["data"]["context_length"] == 32 and recorded["data"]["max_tokens"] == 2048


def test_rerunning_cache_repairs_a_corrupt_shard(tmp_path, tiny_model, cache):
    root = tmp_path / "c"
    shutil.copytree(cache, root)
    before = shard_digests(root)
    flip_byte(root / "shards" / "000002" / f"{HOOK}.npy")
    build_cache(cache_config(root, [HOOK]), model=tiny_model, progress=False)
    assert verify_cache(root) == [] and shard_digests(root) == before


def test_verify_names_a_truncated_shard_json_and_a_rerun_repairs_it(tmp_path, tiny_model, cache):
    root = tmp_path / "c"
    shutil.copytree(cache, root)
    meta = root / "shards" / "000001" / "shard.json"
    meta.write_text(meta.read_text()[:40])
    assert any("shard 000001" in p and "shard.json" in p for p in verify_cache(root))
    build_cache(cache_config(root, [HOOK]), model=tiny_model, progress=False)
    assert verify_cache(root) == []


def test_a_manifest_edit_that_still_parses_is_detected(tmp_path, cache):
    root = tmp_path / "c"
    shutil.copytree(cache, root)
    m = root / "manifest.json"
    m.write_text(m.read_text().replace('"norm_scale": ', '"norm_scale": 1', 1))
    with pytest.raises(fmt.CacheError, match="checksum"):
        ActivationCache(root)


def test_feature_db_default_open_detects_a_flipped_byte(tmp_path):
    path = write_synthetic_db(tmp_path / "f.sqlite", n_features=64, vocab=256)
    FeatureDB(path).close()
    flip_byte(path, offset=4096 + 200)
    with pytest.raises(FeatureDBError, match="does not match its recorded SHA-256"):
        FeatureDB(path)


def test_feature_db_trusts_a_recorded_stat_after_one_hash(tmp_path, monkeypatch):
    from sae_lab.evaluation import feature_db as fdb

    path = write_synthetic_db(tmp_path / "f.sqlite", n_features=64, vocab=256)
    old = path.stat().st_mtime - 10
    os.utime(path, (old, old))
    FeatureDB(path).close()  # hashes once and records size/mtime/inode
    calls = []
    monkeypatch.setattr(fdb, "sha256_file", lambda p: calls.append(p) or "x")
    FeatureDB(path).close()
    assert calls == []


def test_undecodable_text_is_refused_naming_the_file_and_line(tmp_path):
    (tmp_path / "a.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataSourceError, match=r"a.txt is not valid utf-8"):
        list(iter_documents(DataConfig(source=str(tmp_path / "a.txt"))))
    assert list(iter_documents(DataConfig(source=str(tmp_path / "a.txt"), encoding="latin-1"))) == ["café au lait"]
    (tmp_path / "b.txt").write_bytes(b"\x00\x01\x02binary")
    with pytest.raises(DataSourceError, match="b.txt looks like a binary file"):
        list(iter_documents(DataConfig(source=str(tmp_path / "b.txt"))))
    (tmp_path / "c.jsonl").write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataSourceError, match=r"c.jsonl:2 is not valid utf-8"):
        list(iter_documents(DataConfig(source=str(tmp_path / "c.jsonl"))))


@pytest.mark.parametrize(
    "line, problem",
    [("42", "is a JSON int"), ('{"text": null}', "must be text"), ('{"input_ids": [1, -2]}', "non-negative token ids")],
)
def test_bad_jsonl_rows_are_named(tmp_path, line, problem):
    (tmp_path / "d.jsonl").write_text('{"text": "fine"}\n' + line + "\n")
    with pytest.raises(DataSourceError, match=f"d.jsonl:2.*{problem}"):
        list(iter_documents(DataConfig(source=str(tmp_path / "d.jsonl"))))


def test_token_ids_outside_the_vocabulary_are_refused(tmp_path, tiny_model):
    (tmp_path / "t.jsonl").write_text(json.dumps({"input_ids": [5, 6, 99999]}) + "\n")
    cfg = DataConfig(source=str(tmp_path / "t.jsonl"), context_length=4)
    with pytest.raises(DataSourceError, match="token id 99999"):
        list(iter_contexts(cfg, tiny_model.tokenizer))


# ---- 3. dead ends ------------------------------------------------------------------------------------------


def test_cache_killed_before_its_first_manifest_reruns(tmp_path, tiny_model, monkeypatch, cache):
    root = tmp_path / "c"

    def die(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_writer, "estimate_hook_stats", die)
    with pytest.raises(KeyboardInterrupt):
        build_cache(cache_config(root, [HOOK]), model=tiny_model, progress=False)
    assert root.exists() and not (root / "manifest.json").exists()
    monkeypatch.undo()
    build_cache(cache_config(root, [HOOK]), model=tiny_model, progress=False)
    assert shard_digests(root) == shard_digests(cache)


def test_a_cache_that_failed_on_a_data_error_reruns(tmp_path, tiny_model):
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "the"}\n' * 3 + "7\n")
    with pytest.raises(DataSourceError, match="data.jsonl:4"):
        build_cache(cache_config(tmp_path / "c", [HOOK], data={"source": str(data)}), model=tiny_model, progress=False)
    data.write_text(" ".join(["the value of the"] * 400) + "\n")
    data.rename(tmp_path / "data.txt")
    cfg = cache_config(tmp_path / "c", [HOOK], max_tokens=256)
    cfg.data.source = str(tmp_path / "data.txt")
    build_cache(cfg, model=tiny_model, progress=False)
    assert verify_cache(tmp_path / "c") == []


def test_a_truncated_manifest_is_rebuilt_by_a_rerun(tmp_path, tiny_model, cache):
    root = tmp_path / "c"
    shutil.copytree(cache, root)
    m = root / "manifest.json"
    m.write_text(m.read_text()[:300])
    with pytest.raises(fmt.CacheError, match="rerun `sae-lab cache`"):
        ActivationCache(root)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (root / "shards").iterdir()}
    build_cache(cache_config(root, [HOOK]), model=tiny_model, progress=False)
    assert verify_cache(root) == [] and shard_digests(root) == shard_digests(cache)
    assert {p.name: p.stat().st_mtime_ns for p in (root / "shards").iterdir()} == mtimes  # shards were kept


def test_a_cache_inside_the_run_directory_is_accepted(tmp_path, tiny_model):
    run = tmp_path / "run"
    build_cache(cache_config(run / "cache", [HOOK]), model=tiny_model, progress=False)
    result = train_run(_run(run, run / "cache"))
    assert result.status == "done" and (run / "cache" / "manifest.json").exists()
