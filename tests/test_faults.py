"""Fault injection on the real embedded model (small sizes): kills, flipped bytes, file-size limits.

- SIGKILL at a seeded random moment during `cache`, `train` and `analyze`; the rerun equals an uninterrupted
  run byte for byte.
- A flipped byte in each kind of file sae-lab writes (shard array, shard.json, manifest, checkpoint, SAE
  weights, feature database): detected and named, then repaired by rerunning the command that writes it.
- A file-size limit (``ulimit -f``) during each command: a clear message (no traceback); a rerun without the
  limit recovers and equals the uninterrupted run.

Every command runs as a real `python -m sae_lab` subprocess. One small cache/run is shared by all cases.
``SAE_LAB_FAULT_KILLS`` (default 1) sets the kills per command; RELIABILITY.md reports the figures.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.embedded

REPO = Path(__file__).resolve().parents[1]
SEED = 20261202
KILLS = int(os.environ.get("SAE_LAB_FAULT_KILLS", "1"))
HOOK = "blocks.3.hook_resid_post"
SHARED = f"""
model: {{name: embedded}}
data: {{source: embedded, context_length: 64, max_tokens: 8192}}
activations: {{hooks: [{HOOK}], batch_size: 16, exclude_outliers: 10.0, norm_sample_contexts: 32}}
"""
RUN = """
run_dir: {run}
cache: {{path: {cache}, storage_dtype: float16, shard_contexts: 16}}
train: {{batch_size: 256, total_tokens: 12288, lr: 0.001, checkpoint_every_tokens: 1024, log_every_steps: 4,
         keep_checkpoints: 2, progress: false}}
saes: [{{architecture: topk, name: topk, d_sae: 1152, k: 16}}]
analyze: {{n_tokens: 4096, batch_size: 8, checkpoint_every_tokens: 512,
           data: {{source: embedded, context_length: 64}}}}
"""
TALLY: dict[str, list[bool]] = {}


def record(kind: str, ok: bool) -> None:
    TALLY.setdefault(kind, []).append(ok)


def write_configs(d: Path, cache: Path, run: Path) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    (d / "cache.yaml").write_text(SHARED + f"output: {cache}\nstorage_dtype: float16\nshard_contexts: 16\n")
    (d / "run.yaml").write_text(SHARED + RUN.format(run=run, cache=cache))
    return d / "cache.yaml", d / "run.yaml"


def sae_lab(*args, fsize: int | None = None, popen: bool = False):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TQDM_DISABLE": "1"}
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))) if fsize else None
    cmd = [sys.executable, "-m", "sae_lab", *map(str, args)]
    if popen:
        return subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
    return subprocess.run(cmd, env=env, capture_output=True, text=True, preexec_fn=limit, timeout=600)


def ok(result) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def matches_reference(command: str, where: Path, ref: dict) -> bool:
    """Whether what ``command`` wrote under ``where`` equals the uninterrupted reference run's output."""
    if command == "cache":
        return cache_fp(where / "cache") == ref["cache_fp"]
    if command == "train":
        return sae_fp(where / "run") == ref["sae_fp"]
    return db_fp(where / "run") == ref["db_fp"]


def cache_fp(root: Path) -> dict:
    """Every shard file's hash plus the manifest's content (without its creation time and checksum)."""
    fp = {str(p.relative_to(root)): digest(p) for p in sorted((root / "shards").rglob("*")) if p.is_file()}
    manifest = json.loads((root / "manifest.json").read_text())
    fp["manifest"] = {k: v for k, v in manifest.items() if k not in ("created", "checksum")}
    return fp


def sae_fp(run: Path) -> dict:
    d = run / "saes" / "topk"
    return {f: digest(d / f) for f in ("sae_weights.safetensors", "sae_lab_state.safetensors", "cfg.json")}


def db_fp(run: Path) -> str:
    return digest(run / "saes" / "topk" / "features.sqlite")


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The uninterrupted cache -> train -> analyze, with each command's wall time (for the kill moments)."""
    d = tmp_path_factory.mktemp("faults")
    cache_yaml, run_yaml = write_configs(d, d / "cache", d / "run")
    times = {}
    for name, args in (
        ("cache", ["cache", cache_yaml]),
        ("train", ["train", run_yaml]),
        ("analyze", ["analyze", d / "run"]),
    ):
        t0 = time.time()
        ok(sae_lab(*args))
        times[name] = time.time() - t0
    return {
        "dir": d,
        "cache": d / "cache",
        "run": d / "run",
        "times": times,
        "cache_fp": cache_fp(d / "cache"),
        "sae_fp": sae_fp(d / "run"),
        "db_fp": db_fp(d / "run"),
    }


def kill_at(args, seconds: float) -> bool:
    """Start a command, SIGKILL it after ``seconds``; True if it was still running (a real kill)."""
    p = sae_lab(*args, popen=True)
    try:
        p.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        return True


def _fresh_run(ref, where: Path, with_sae: bool = False) -> Path:
    """A copy of the reference run: config and cache path as is; trained weights only if asked."""
    run = where / "run"
    shutil.copytree(ref["run"], run)
    (run / "saes" / "topk" / "features.sqlite").unlink()
    (run / "saes" / "topk" / "features.sqlite.sha256").unlink()
    if not with_sae:
        shutil.rmtree(run / "saes")
        shutil.rmtree(run / "checkpoints")
        for f in ("run.json", "metrics.jsonl"):
            (run / f).unlink()
    return run


def _command_args(command: str, ref, where) -> list:
    """sae-lab arguments for ``command`` in a fresh directory ``where``: cache and train write their own configs
    (train reads the reference cache); analyze gets a copy of the reference run with its trained SAE."""
    cache_yaml, run_yaml = write_configs(where, where / "cache", where / "run")
    if command == "cache":
        return ["cache", cache_yaml]
    if command == "train":
        return ["train", run_yaml, f"cache.path={ref['cache']}"]
    return ["analyze", _fresh_run(ref, where, with_sae=True)]


@pytest.mark.parametrize("command", ["cache", "train", "analyze"])
def test_sigkill_then_rerun_equals_the_uninterrupted_run(ref, tmp_path, command):
    rng = random.Random(f"{SEED}-{command}")
    for i in range(KILLS):
        where = tmp_path / str(i)
        args = _command_args(command, ref, where)
        moment = rng.uniform(0.3, 0.95) * ref["times"][command]
        killed = kill_at(args, moment)
        ok(sae_lab(*args))
        same = matches_reference(command, where, ref)
        record(f"kill during {command}", same)
        assert same, f"{command}: rerun after a kill at {moment:.1f}s (killed={killed}) differs from the reference"


def flip(path: Path, rng: random.Random) -> int:
    data = bytearray(path.read_bytes())
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return at


@pytest.mark.parametrize("kind", ["shard array", "shard.json", "manifest"])
def test_flipped_byte_in_the_cache_is_named_and_repaired(ref, tmp_path, kind):
    rng = random.Random(f"{SEED}-{kind}")
    cache = tmp_path / "cache"
    shutil.copytree(ref["cache"], cache)
    target = {
        "shard array": cache / "shards" / "000003" / f"{HOOK}.npy",
        "shard.json": cache / "shards" / "000002" / "shard.json",
        "manifest": cache / "manifest.json",
    }[kind]
    flip(target, rng)
    check = sae_lab("verify", cache)
    named = check.returncode != 0 and (
        target.name in check.stdout + check.stderr or target.parent.name in check.stdout + check.stderr
    )
    assert named, check.stdout + check.stderr
    assert "Traceback" not in check.stderr
    cache_yaml, _ = write_configs(tmp_path, cache, tmp_path / "run")
    ok(sae_lab("cache", cache_yaml))
    repaired = sae_lab("verify", cache).returncode == 0 and cache_fp(cache) == ref["cache_fp"]
    record(f"flipped byte: {kind}", named and repaired)
    assert repaired


def test_flipped_byte_in_the_newest_checkpoint_is_named_and_an_older_one_used(ref, tmp_path):
    run = _fresh_run(ref, tmp_path, with_sae=True)
    newest = sorted((run / "checkpoints").glob("ckpt_*.pt"))[-1]
    flip(newest, random.Random(f"{SEED}-ckpt"))
    shutil.rmtree(run / "saes")
    write_configs(tmp_path, ref["cache"], run)
    result = sae_lab("train", tmp_path / "run.yaml")
    ok(result)
    named = newest.name in result.stderr
    same = sae_fp(run) == ref["sae_fp"]
    record("flipped byte: checkpoint", named and same)
    assert named and same, result.stderr[-2000:]


def test_flipped_byte_in_sae_weights_is_refused_and_a_rerun_of_train_repairs_it(ref, tmp_path):
    run = _fresh_run(ref, tmp_path, with_sae=True)
    weights = run / "saes" / "topk" / "sae_weights.safetensors"
    flip(weights, random.Random(f"{SEED}-weights"))
    refused = sae_lab("analyze", run)
    named = refused.returncode != 0 and "sae_weights.safetensors" in refused.stderr
    assert named and "Traceback" not in refused.stderr, refused.stderr[-2000:]
    write_configs(tmp_path, ref["cache"], run)
    ok(sae_lab("train", tmp_path / "run.yaml"))
    same = sae_fp(run) == ref["sae_fp"]
    record("flipped byte: SAE weights", named and same)
    assert same


def test_flipped_byte_in_the_feature_database_is_named_and_a_rerun_repairs_it(ref, tmp_path):
    from sae_lab.evaluation.feature_db import FeatureDB, FeatureDBError

    run = tmp_path / "run"
    shutil.copytree(ref["run"], run)
    db = run / "saes" / "topk" / "features.sqlite"
    flip(db, random.Random(f"{SEED}-db"))
    with pytest.raises(FeatureDBError, match="features.sqlite"):
        FeatureDB(db)
    ok(sae_lab("analyze", run))
    same = db_fp(run) == ref["db_fp"]
    record("flipped byte: feature database", same)
    assert same


@pytest.mark.parametrize("command, limit", [("cache", 256 << 10), ("train", 1 << 20), ("analyze", 1 << 20)])
def test_a_file_size_limit_gives_a_clear_message_and_a_rerun_recovers(ref, tmp_path, command, limit):
    args = _command_args(command, ref, tmp_path)
    limited = sae_lab(*args, fsize=limit)
    clear = limited.returncode != 0 and "Traceback" not in limited.stderr and "file-size limit" in limited.stderr
    assert clear, limited.stderr[-2000:]
    if command == "train":
        assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "failed"
    ok(sae_lab(*args))
    same = matches_reference(command, tmp_path, ref)
    record(f"file-size limit during {command}", clear and same)
    assert same


def test_zz_report_the_tally(capsys):
    """Prints the figures RELIABILITY.md reports (cases tried and cases that ended cleanly, by kind)."""
    with capsys.disabled():
        for kind, results in sorted(TALLY.items()):
            print(f"\n  {kind}: {len(results)} tried, {sum(results)} clear and nothing lost", end="")
        print()
