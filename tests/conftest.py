import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model():
    from tiny import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The tiny random Llama saved as a local Hugging Face model directory (for subprocesses and the CLI)."""
    from tiny import tiny_hf

    where = tmp_path_factory.mktemp("tiny_model")
    model, tok = tiny_hf()
    model.save_pretrained(where)
    tok.save_pretrained(where)
    return where


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory, tiny_model):
    """A small activation cache of blocks.1.hook_resid_post of the tiny random Llama (read only)."""
    from cache_helpers import cache_config
    from sae_lab.activations.cache_writer import build_cache

    root = tmp_path_factory.mktemp("tiny_cache") / "cache"
    build_cache(cache_config(root, ["blocks.1.hook_resid_post"]), model=tiny_model, progress=False)
    return root


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded SmolLM2-135M model (built into the user cache on first use)."""
    from sae_lab.models import load_model

    return load_model("embedded", device="cpu")


EMBEDDED_CACHE_ARGS = ["data.max_tokens=20480", "data.context_length=128", "shard_contexts=32",
                       "activations.hooks=[blocks.15.hook_resid_post]", "activations.exclude_outliers=10",
                       "activations.batch_size=16", "storage_dtype=float16"]


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory, embedded_model):
    """~20k tokens of layer-15 residuals of the real embedded model, cached in-process."""
    from sae_lab.activations.cache_writer import build_cache
    from sae_lab.activations.config import CacheConfig
    from sae_lab.configbase import load_config

    root = tmp_path_factory.mktemp("embedded") / "cache"
    cfg = load_config(CacheConfig, None, [f"output={root}", *EMBEDDED_CACHE_ARGS])
    build_cache(cfg, model=embedded_model, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run directory trained, evaluated and analysed by the pipeline on a tiny random Llama (~20 s)."""
    from dashboard_helpers import tiny_run as build

    return build(tmp_path_factory.mktemp("dashboard"))


@pytest.fixture(scope="session")
def embedded_run(tmp_path_factory):
    """A run directory with two small SAEs on the real embedded model, trained, evaluated and analysed."""
    from dashboard_helpers import embedded_run as build

    return build(tmp_path_factory.mktemp("dashboard_embedded"))


@pytest.fixture(scope="session")
def hook_z_sae(tiny_run):
    """A standalone attention-output SAE directory (tiny model) with its feature database."""
    from dashboard_helpers import hook_z_sae_dir

    return hook_z_sae_dir(tiny_run.parent, tiny_run.parent / "tiny_model")
