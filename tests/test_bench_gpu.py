"""experiments/bench_gpu.py end to end on the CPU (its smoke size), and the first-blocks GGUF it runs on remotely."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
sys.path.insert(0, str(EXPERIMENTS))

pytestmark = pytest.mark.embedded


@pytest.fixture(scope="module")
def first_two_blocks(tmp_path_factory) -> Path:
    from gguf_first_blocks import write_first_blocks

    from sae_lab.models import embedded_gguf_path

    out = tmp_path_factory.mktemp("gguf") / "first2.gguf"
    write_first_blocks(embedded_gguf_path(), out, 2)
    return out


def test_first_blocks_gguf_gives_the_full_models_activations(first_two_blocks):
    from sae_lab.models import load_model

    part, full = load_model(str(first_two_blocks), "cpu"), load_model("embedded", "cpu")
    assert (part.n_layers, full.n_layers) == (2, 30)
    ids = full.tokenizer("def f(x):\n    return x + 1  # the quick brown fox", return_tensors="pt").input_ids
    hook = "blocks.1.hook_resid_post"
    _, a = part.bridge.run_with_cache(ids, names_filter=[hook])
    _, b = full.bridge.run_with_cache(ids, names_filter=[hook], stop_at_layer=2)
    assert torch.equal(a[hook], b[hook])


def test_first_blocks_rejects_more_blocks_than_the_model_has(first_two_blocks, tmp_path):
    from gguf_first_blocks import write_first_blocks

    with pytest.raises(SystemExit, match="between 1 and the model's 2 blocks"):
        write_first_blocks(first_two_blocks, tmp_path / "x.gguf", 3)


def test_bench_gpu_runs_on_cpu_and_writes_its_table(first_two_blocks, tmp_path):
    import bench_gpu

    out = tmp_path / "out"
    result = bench_gpu.main(
        [
            "--model",
            str(first_two_blocks),
            "--hook",
            "blocks.1.hook_resid_post",
            "--device",
            "cpu",
            "--steps",
            "2",
            "--profile",
            "1",
            "--out",
            str(out),
        ]
    )
    runs = json.loads((out / "bench_gpu.json").read_text())["runs"]
    assert runs == json.loads(json.dumps(result["runs"]))
    assert {(r["arch"], r["dtype"]) for r in runs if r["library"] == "sae-lab"} == {
        (a, d) for a in bench_gpu.ARCHS for d in ("float32", "bfloat16")
    }
    for r in runs:
        assert r["steps"] == 2 and r["tokens_per_s"] > 0 and math.isfinite(r["fvu_sanity"])
        assert r["fvu_sanity"] < 1.5, r  # the choice SAEs are calibrated before the sanity check
    assert result["cache"]["cache_tokens"] == 4096
    table = (out / "bench_gpu.md").read_text()
    assert "| sae-lab | matching_pursuit | bfloat16 | 2 |" in table
    assert table.count("=== ") == 0 and (out / "profiles.txt").read_text().count("=== sae-lab") == 8
