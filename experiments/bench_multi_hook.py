"""Many hooks in one run: SAEs on 4 layers of the embedded model in one run, against 4 separate runs, and against
eai-sparsify's Trainer with 4 hookpoints, on the same tokens, side by side in one job.

    python experiments/bench_multi_hook.py [--contexts 512] [--layers 3 6 9 12] [--routes stream cache]
        [--sparsify-python /work/peer_envs/sparsify/bin/python] [--out experiments/results/multi_hook/result.json]

Every variant is a fresh process timed from its start to its exit (imports, model load, activations, training,
saving: the whole run as a user sees it), each training one TopK SAE per layer (4x576 = 2,304 latents, k 32, batches
of 1,024 tokens, one pass over ``contexts`` x 128 tokens of the embedded corpus's training split):

- ``stream``: sae-lab from a live stream (``cache: null``): ``sae-lab train`` of one config whose
  ``activations.hooks`` lists the 4 layers (one forward pass per batch for all), against 4 ``sae-lab train`` runs of
  one layer each (each runs the model up to its own layer);
- ``cache``: ``sae-lab cache`` of the 4 layers then one ``sae-lab train`` on it, against 4 x (cache one layer, train);
- sparsify: ``experiments/peers/train_sparsify_hookpoints.py`` (its ``Trainer``, default optimizer, one epoch over the
  same token ids, exported here) in its own venv (experiments/peers/README.md); skipped when that python is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
CTX, BATCH, K, EXPANSION = 128, 1024, 32, 4


def export_tokens(n_contexts: int, path: Path) -> int:
    """The first ``n_contexts`` packed contexts of the embedded training text, as sae-lab reads them."""
    from sae_lab.data.config import DataConfig
    from sae_lab.data.packing import iter_contexts
    from sae_lab.models import load_model

    tok = load_model("embedded").tokenizer
    data = DataConfig(source="embedded", context_length=CTX, max_tokens=n_contexts * CTX)
    tokens = np.stack(list(iter_contexts(data, tok)))
    np.save(path, tokens.astype(np.int64))
    return int(tokens.shape[0])


def run_config(root: Path, name: str, hooks: list[str], n_contexts: int, cache: bool) -> Path:
    """A run config training one TopK SAE per hook on one pass over the tokens."""
    kept = n_contexts * (CTX - 1)  # BOS is not trained on
    cfg = {
        "run_dir": str(root / "runs" / name),
        "model": {"name": "embedded"},
        "data": {"source": "embedded", "context_length": CTX, "max_tokens": n_contexts * CTX},
        "activations": {"hooks": hooks, "batch_size": 16, "exclude_outliers": 10.0},
        "cache": {"path": str(root / "caches" / name), "storage_dtype": "float16", "verify": "quick"}
        if cache
        else None,
        "train": {"batch_size": BATCH, "total_tokens": kept // BATCH * BATCH, "progress": False, "calibrate_tokens": 0},
        "saes": [{"architecture": "topk", "name": "topk", "expansion_factor": EXPANSION, "k": K}],
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    if cache:  # the `sae-lab cache` config of the same activations
        keys = ("model", "data", "activations")
        cache_cfg = {**{k: cfg[k] for k in keys}, "output": cfg["cache"]["path"], "storage_dtype": "float16"}
        path.with_suffix(".cache.yaml").write_text(yaml.safe_dump(cache_cfg))
    return path


def timed(cmd: list[str], log: Path) -> float:
    """Wall seconds of ``cmd`` (a fresh process); its output goes to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    t = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed; see {log}")
    return time.perf_counter() - t


def sae_lab_route(root: Path, route: str, hooks: list[str], n: int) -> dict:
    """One run on every hook, then one run per hook: whole-process seconds of each."""
    cache = route == "cache"
    out = {}
    for label, groups in (("one_run", [hooks]), ("separate_runs", [[h] for h in hooks])):
        seconds = []
        for i, group in enumerate(groups):
            cfg = run_config(root, f"{route}_{label}_{i}", group, n, cache)
            t = (
                timed(
                    [sys.executable, "-m", "sae_lab", "cache", str(cfg.with_suffix(".cache.yaml"))],
                    root / f"{cfg.stem}.cache.log",
                )
                if cache
                else 0.0
            )
            seconds.append(t + timed([sys.executable, "-m", "sae_lab", "train", str(cfg)], root / f"{cfg.stem}.log"))
        out[label] = {"seconds": sum(seconds), "per_run": seconds}
    out["separate_over_one"] = out["separate_runs"]["seconds"] / out["one_run"]["seconds"]
    return out


def sparsify(root: Path, python: str, tokens: Path, layers: list[int]) -> dict:
    """eai-sparsify's Trainer on the same token ids, one SAE per hookpoint (whole process and its own timers)."""
    from sae_lab.models import embedded_store_dir

    result = root / "sparsify.json"
    cmd = [python, str(HERE / "peers" / "train_sparsify_hookpoints.py"), "--model", str(embedded_store_dir())]
    cmd += ["--tokens", str(tokens), "--hookpoints", *[f"layers.{i}" for i in layers]]
    cmd += ["--expansion-factor", str(EXPANSION), "--k", str(K), "--batch-contexts", str(BATCH // CTX)]
    cmd += ["--out", str(result), "--threads", str(os.cpu_count() or 1), "--save-dir", str(root / "sparsify_out")]
    seconds = timed(cmd, root / "sparsify.log")
    return {"seconds": seconds, **json.loads(result.read_text())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--contexts", type=int, default=512)
    p.add_argument("--layers", type=int, nargs="+", default=[3, 6, 9, 12])
    p.add_argument("--routes", nargs="+", default=["stream", "cache"], choices=["stream", "cache"])
    p.add_argument("--sparsify-python", default="/work/peer_envs/sparsify/bin/python")
    p.add_argument("--work", default="/tmp/bench_multi_hook")
    p.add_argument("--out", default=str(HERE / "results" / "multi_hook" / "result.json"))
    args = p.parse_args()
    root = Path(args.work)
    root.mkdir(parents=True, exist_ok=True)
    hooks = [f"blocks.{i}.hook_resid_post" for i in args.layers]
    n = export_tokens(args.contexts, root / "tokens.npy")
    report = {"contexts": n, "context_length": CTX, "tokens": n * CTX, "hooks": hooks, "cpus": os.cpu_count()}
    if Path(args.sparsify_python).is_file():  # first, so that each side runs on the same (cold or warm) page cache
        report["sparsify"] = sparsify(root, args.sparsify_python, root / "tokens.npy", args.layers)
    for route in args.routes:
        report[f"sae_lab_{route}"] = sae_lab_route(root, route, hooks, n)
        print(route, json.dumps(report[f"sae_lab_{route}"]), flush=True)
    if "sparsify" in report:
        for route in args.routes:
            report[f"sparsify_over_sae_lab_{route}"] = (
                report["sparsify"]["seconds"] / report[f"sae_lab_{route}"]["one_run"]["seconds"]
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
