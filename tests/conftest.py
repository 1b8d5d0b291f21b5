import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist (`-n 2`, the README's test command) each worker and the subprocesses it starts use one
# thread: two workers with a thread per core each would oversubscribe the cores and slow every matmul.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# The markers that `python -m pytest -m "not embedded and not browser and not torchrun and not package"` (the fast
# command in the README) leaves out. A test that needs one of these and is not marked fails, so the fast command
# stays fast:
# - by fixture, at collection (below);
# - at run time, an unmarked test that loads the embedded model (in this process or a subprocess: it would build
#   its store in an empty $SAE_LAB_CACHE) or starts torchrun, Playwright's driver, `python -m build` or
#   `python -m venv` (a subprocess) fails.
FIXTURE_MARKS = {"embedded_model": "embedded", "embedded_cache": "embedded", "embedded_run": "embedded"}


def command_mark(argv) -> str | None:
    """The marker a subprocess command needs: torchrun (``-m torch.distributed.run``), Playwright's driver,
    building or installing the package in a fresh venv (``-m build``, ``-m venv``)."""
    words = str(argv).split() if isinstance(argv, (str, bytes, os.PathLike)) else [str(a) for a in argv]
    if {b for a, b in zip(words, words[1:]) if a == "-m"} & {"build", "venv"}:
        return "package"
    if any(w == "torch.distributed.run" or Path(w).name == "torchrun" for w in words):
        return "torchrun"
    if any("playwright" in Path(w).parts for w in words):
        return "browser"
    return None


def pytest_configure(config):
    """Under pytest-xdist, build the embedded model's store once in the controller before the workers start:
    two workers building it at once would each replace the directory while the other reads it."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    if "not embedded" in (config.option.markexpr or ""):
        return
    from sae_lab.models import prepare_embedded_store

    prepare_embedded_store()


def pytest_collection_modifyitems(config, items):
    unmarked = [
        f"{item.nodeid} uses the fixture {fixture}: mark it @pytest.mark.{mark}"
        for item in items
        for fixture, mark in FIXTURE_MARKS.items()
        if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(mark) is None
    ]
    if unmarked:
        raise pytest.UsageError("tests missing a marker:\n" + "\n".join(unmarked))


def _guarded_popen(marks: set[str]) -> type:
    class GuardedPopen(subprocess.Popen):
        """Popen that refuses the commands whose marker the running test lacks."""

        def __init__(self, args, *rest, **kwargs):
            mark = command_mark(args)
            if mark is not None and mark not in marks:
                pytest.fail(f"this test starts {args!r}, which needs the marker: mark it @pytest.mark.{mark}")
            super().__init__(args, *rest, **kwargs)

    return GuardedPopen


@pytest.fixture(autouse=True)
def _markers_are_complete(request, monkeypatch, tmp_path_factory):
    marks = {m.name for m in request.node.iter_markers()}
    monkeypatch.setattr(subprocess, "Popen", _guarded_popen(marks))
    if "embedded" in marks:
        yield
        return
    empty = tmp_path_factory.mktemp("sae_lab_cache")
    monkeypatch.setenv("SAE_LAB_CACHE", str(empty))
    yield
    if (empty / "models").exists():
        pytest.fail("this test loaded the embedded model: mark it @pytest.mark.embedded")


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


EMBEDDED_CACHE_ARGS = [
    "data.max_tokens=20480",
    "data.context_length=128",
    "shard_contexts=32",
    "activations.hooks=[blocks.15.hook_resid_post]",
    "activations.exclude_outliers=10",
    "activations.batch_size=16",
    "storage_dtype=float16",
]


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
