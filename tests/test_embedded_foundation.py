"""The foundation on the real embedded model: loading, caching ~20k tokens, and a 2-process torchrun cache that
matches the 1-process one. A kill during caching and a corrupt shard on the embedded model: tests/test_faults.py
(on a tiny model: tests/test_cache.py, tests/test_reliability.py)."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from cache_helpers import all_tokens
from conftest import EMBEDDED_CACHE_ARGS
from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.models import embedded_store_dir, load_model

pytestmark = pytest.mark.embedded
HOOK = "blocks.15.hook_resid_post"


def test_embedded_model_is_the_real_smollm2(embedded_model):
    assert (embedded_model.d_model, embedded_model.n_layers, embedded_model.n_heads) == (576, 30, 9)
    tok = embedded_model.tokenizer
    ids = torch.tensor([tok("The capital of France is", add_special_tokens=False).input_ids])
    with torch.no_grad():
        logits = embedded_model.bridge(ids)
    assert tok.decode(logits[0, -1].argmax()) == " Paris"


def test_hub_model_offline_fails_clearly():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # read by huggingface_hub at import: set it for a new process
    proc = subprocess.run(
        [sys.executable, "-m", "sae_lab", "cache", "output=unused", "model.name=gpt2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "could not load model 'gpt2' from the Hugging Face Hub (HF_HUB_OFFLINE=1 is set)" in proc.stderr
    assert "model.name=embedded" in proc.stderr


def test_corrupt_model_store_is_rebuilt(tmp_path, monkeypatch, embedded_model):
    store = embedded_store_dir()
    monkeypatch.setenv("SAE_LAB_CACHE", str(tmp_path))
    copy = embedded_store_dir()
    shutil.copytree(store, copy)
    weights = copy / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(b"\x00garbage\x00")
    model = load_model("embedded", device="cpu")
    assert model.weights_hash == embedded_model.weights_hash
    meta = json.loads((copy / "store.json").read_text())
    assert meta["weights_sha256"] == embedded_model.weights_hash


def test_cached_activations_equal_a_direct_forward(embedded_cache, embedded_model):
    cache = ActivationCache(embedded_cache, verify="full")
    m = cache.manifest
    assert m["totals"]["tokens"] == 20480 and m["model"]["weights_sha256"] == embedded_model.weights_hash
    assert m["totals"]["excluded_outliers"][HOOK] > 0  # the attention sinks
    tokens = torch.as_tensor(np.array(cache.tokens(2)), dtype=torch.long)
    with torch.no_grad():
        hidden = embedded_model.bridge.original_model(tokens[:4], output_hidden_states=True).hidden_states[16]
    cached = cache.acts(2, HOOK)[:4]
    rel = (cached - hidden).norm() / hidden.norm()
    assert rel < 1e-3  # float16 storage
    batch = next(cache.source(HOOK).iter_batches(1024, seed=0))
    assert abs(batch.norm(dim=-1).mean().item() - 24.0) < 3.0  # normalised: mean ||x|| ~ sqrt(576)


def _torchrun_cache(output, nproc: int):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return launcher + ["-m", "sae_lab", "cache", f"output={output}", "model.device=cpu", *EMBEDDED_CACHE_ARGS], env


def _assert_same_contents(a, b):
    ca, cb = ActivationCache(a, verify="full"), ActivationCache(b, verify="full")
    assert np.array_equal(all_tokens(ca), all_tokens(cb))  # same contexts, none missing or repeated
    assert [s["n_contexts"] for s in ca.shards] == [s["n_contexts"] for s in cb.shards]
    for i in range(len(ca.shards)):
        assert torch.allclose(ca.acts(i, HOOK), cb.acts(i, HOOK), rtol=1e-2, atol=1e-2)


@pytest.mark.torchrun
def test_two_process_torchrun_cache_matches_one_process(embedded_cache, tmp_path):
    cmd, env = _torchrun_cache(tmp_path / "two", nproc=2)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = {s["name"]: s["index"] % 2 for s in ActivationCache(tmp_path / "two").shards}
    assert set(ranks.values()) == {0, 1}
    _assert_same_contents(embedded_cache, tmp_path / "two")
