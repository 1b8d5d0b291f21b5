"""Cache generation under torchrun: 2 CPU processes (gloo) write the same shards as 1 process."""

import os
import subprocess
import sys

import pytest

from cache_helpers import shard_digests
from sae_lab.activations.cache_reader import verify_cache

pytestmark = pytest.mark.torchrun

ARGS = [
    "data.max_tokens=2048",
    "data.context_length=32",
    "shard_contexts=8",
    "activations.hooks=[blocks.1.hook_resid_post]",
    "activations.norm_sample_contexts=8",
    "storage_dtype=float32",
]


def run_cache(output, model_dir, nproc: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone", "-m", "sae_lab"]
        if nproc > 1
        else [sys.executable, "-m", "sae_lab"]
    )
    cmd = launcher + ["cache", f"output={output}", f"model.name={model_dir}", "model.device=cpu", *ARGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_two_ranks_write_the_same_shards_as_one(tmp_path, tiny_model_dir):
    run_cache(tmp_path / "one", tiny_model_dir, 1)
    run_cache(tmp_path / "two", tiny_model_dir, 2)
    one, two = shard_digests(tmp_path / "one"), shard_digests(tmp_path / "two")
    assert len(one) == 8 and one == two
    assert verify_cache(tmp_path / "two") == []
