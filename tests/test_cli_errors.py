"""Every bad input we know of, fed to the CLI: a non-zero exit, a message naming the problem, no traceback.

The CLI's one error boundary (sae_lab.cli.main) turns every exception into a message; this list is where a new
bad input gets added. The model is a tiny random Llama saved as a local model directory (fast to load).
"""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file, save_file

from sae_lab.cli import main as cli

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    return tiny_model_dir


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_dir):
    """A cache, a trained run and an SAE directory made through the CLI itself."""
    w = tmp_path_factory.mktemp("cli")
    common = [
        f"model.name={tiny_dir}",
        f"activations.hooks=[{HOOK}]",
        "data.max_tokens=2048",
        "data.context_length=32",
        "activations.norm_sample_contexts=8",
    ]
    assert cli(["cache", f"output={w / 'cache'}", "shard_contexts=8", *common]) == 0
    assert (
        cli(
            [
                "train",
                f"run_dir={w / 'run'}",
                f"cache.path={w / 'cache'}",
                "cache.shard_contexts=8",
                *common,
                "saes=[{architecture: topk, d_sae: 128, k: 8}]",
                "train.batch_size=64",
                "train.total_tokens=640",
                "train.progress=false",
            ]
        )
        == 0
    )
    return w, common


def _sae_copy(work, tmp_path, name="sae"):
    import shutil

    w, _ = work
    d = tmp_path / name
    shutil.copytree(w / "run" / "saes" / "topk_k8", d)
    return d


def _nan_weights(d):
    t = load_file(str(d / "sae_weights.safetensors"))
    t["W_enc"][0, 0] = float("nan")
    save_file(t, str(d / "sae_weights.safetensors"))
    return d


def _cases(work, tmp_path, tiny_dir):
    w, common = work
    cache = ["cache", f"output={tmp_path / 'c'}", *common]
    train = [
        "train",
        f"run_dir={tmp_path / 'r'}",
        f"cache.path={w / 'cache'}",
        "cache.shard_contexts=8",
        *common,
        "saes=[{architecture: topk, d_sae: 128, k: 8}]",
        "train.batch_size=64",
        "train.total_tokens=640",
        "train.progress=false",
    ]
    (tmp_path / "num.jsonl").write_text('{"text": "a b"}\n42\n')
    (tmp_path / "null.jsonl").write_text('{"text": null}\n')
    (tmp_path / "ids.jsonl").write_text(json.dumps({"input_ids": [1, 2, 10**6]}) + "\n")
    (tmp_path / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (tmp_path / "bin.txt").write_bytes(b"\x00\x01\x02\x03")
    (tmp_path / "bad.yaml").write_text("run_dir: [unclosed\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    trunc = _sae_copy(work, tmp_path, "trunc")
    (trunc / "sae_weights.safetensors").write_bytes((trunc / "sae_weights.safetensors").read_bytes()[:100])
    broken = _sae_copy(work, tmp_path, "broken")
    (broken / "sae_lab.json").write_text("{not json")
    nan = _nan_weights(_sae_copy(work, tmp_path, "nan"))
    import shutil

    badshard = tmp_path / "badshard"
    shutil.copytree(w / "cache", badshard)
    (badshard / "shards" / "000001" / "shard.json").write_text('{"name": "0000')
    return {  # (argv, words the message must contain)
        "cache: a JSON line that is a number": ([*cache, f"data.source={tmp_path / 'num.jsonl'}"], "num.jsonl:2"),
        "cache: text null": ([*cache, f"data.source={tmp_path / 'null.jsonl'}"], "must be text"),
        "cache: token ids outside the vocabulary": ([*cache, f"data.source={tmp_path / 'ids.jsonl'}"], "1000000"),
        "cache: non-UTF-8 text": ([*cache, f"data.source={tmp_path / 'latin.txt'}"], "latin.txt is not valid utf-8"),
        "cache: a binary .txt": ([*cache, f"data.source={tmp_path / 'bin.txt'}"], "binary"),
        "cache: model.device=cuda without a GPU": ([*cache, "model.device=cuda"], "CUDA is not available"),
        "cache: unknown data encoding": (
            [*cache, f"data.source={tmp_path / 'latin.txt'}", "data.encoding=klingon"],
            "klingon",
        ),
        "cache: output holds user files": (["cache", f"output={tmp_path / 'busy'}", *common], "notes.txt"),
        "cache: missing data source": ([*cache, f"data.source={tmp_path / 'nope'}"], "does not exist"),
        "cache: config path is a directory": (["cache", str(tmp_path)], "is a directory"),
        "cache: config file is not YAML": (["cache", str(tmp_path / "bad.yaml")], "not valid YAML"),
        "cache: unknown key": ([*cache, "data.contxt_length=3"], "context_length"),
        "train: batch_size=true": ([*train, "train.batch_size=true"], "boolean"),
        "train: the run config contradicts the cache": ([*train, "data.context_length=16"], "data.context_length"),
        "train: missing cache": ([*train, f"cache.path={tmp_path / 'none'}"], "does not exist"),
        "train: corrupt cache": ([*train, f"cache.path={badshard}"], "shard 000001"),
        "train: diverging lr": (
            [*train, "train.lr=1000", "train.grad_clip=null", "train.log_every_steps=1"],
            "diverged",
        ),
        "train: overwrite with foreign files": (
            [*train[:1], f"run_dir={w / 'run'}", *train[2:], "--resume", "never", "--overwrite"],
            "notes.md",
        ),
        "eval: missing target": (["eval", str(tmp_path / "nothing")], "does not exist"),
        "eval: NaN weights": (["eval", str(nan), "--model", str(tiny_dir), "n_tokens=256"], "W_enc"),
        "analyze: NaN weights": (["analyze", str(nan), "--model", str(tiny_dir), "n_tokens=256"], "W_enc"),
        "eval: truncated safetensors": (["eval", str(trunc), "--model", str(tiny_dir)], "sae_weights.safetensors"),
        "analyze: broken sae_lab.json": (["analyze", str(broken), "--model", str(tiny_dir)], "sae_lab.json"),
        "eval: --device cuda": (["eval", str(w / "run"), "--device", "cuda"], "CUDA is not available"),
        "verify: truncated shard.json": (["verify", str(badshard)], "shard 000001"),
        "verify: not a cache": (["verify", str(tmp_path / "busy")], "manifest"),
    }


def test_every_bad_input_ends_in_a_message_not_a_traceback(work, tmp_path, tiny_dir, capsys):
    (work[0] / "run" / "notes.md").write_text("my notes")
    results = {}
    for name, (argv, words) in _cases(work, tmp_path, tiny_dir).items():
        code = cli(argv)
        out = capsys.readouterr()
        results[name] = (code, words in out.err + out.out, "Traceback" not in out.err)
        assert code != 0, f"{name}: exit 0\n{out.err}"
        assert words in out.err + out.out, f"{name}: message does not name '{words}':\n{out.err}"
        assert "Traceback" not in out.err, name
    assert (work[0] / "run" / "notes.md").read_text() == "my notes"
    print(f"\nCLI bad inputs: {len(results)} tried, {sum(all(r) for r in results.values())} clear")


def test_options_may_sit_between_target_and_overrides(work, tiny_dir, capsys):
    sae = work[0] / "run" / "saes" / "topk_k8"
    assert cli(["eval", str(sae), "--model", str(tiny_dir), "n_tokens=256", "data.context_length=32"]) == 0
    assert "unrecognized" not in capsys.readouterr().err


def test_verbose_shows_the_traceback(tmp_path):
    with pytest.raises(Exception):
        cli(["-v", "eval", str(tmp_path / "nothing")])
