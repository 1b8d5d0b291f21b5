"""Does AuxK help matching pursuit? Two MP-SAEs, identical but for ``aux_coef``, trained in one sweep on the same
cached activations, then evaluated on held-out text (validation split; FVU, L0, dead fraction).

    python experiments/mp_auxk_check.py CACHE_DIR [--d-sae 4608] [--k 32] [--tokens 204800] [--dead-tokens 20000]

Prints one JSON line per SAE: training-time dead fraction (no activation in the last ``dead_tokens`` tokens),
held-out FVU, held-out L0 and held-out dead fraction (never active on the held-out tokens).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.data.config import DataConfig
from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation.evaluate import evaluate_run
from sae_lab.saes import SAEConfig
from sae_lab.training import TrainConfig, train_sweep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--tokens", type=int, default=204800)
    p.add_argument("--dead-tokens", type=int, default=20000)
    p.add_argument("--aux-coef", type=float, default=1 / 32)
    p.add_argument("--lr", type=float, default=8e-4)
    a = p.parse_args()
    source = ActivationCache(a.cache).source()
    common = dict(
        architecture="matching_pursuit",
        d_in=source.d_in,
        d_sae=a.d_sae,
        k=a.k,
        dead_tokens=a.dead_tokens,
        hook_name=source.hook_name,
    )
    saes = [SAEConfig(name="mp", **common), SAEConfig(name="mp_auxk", aux_coef=a.aux_coef, **common)]
    cfg = TrainConfig(
        batch_size=1024,
        total_tokens=a.tokens,
        lr=a.lr,
        warmup_fraction=0.02,
        decay_start=0.6,
        log_every_steps=20,
        progress=False,
    )
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        result = train_sweep(saes, source, cfg, run, extra_config={"model": {"name": "embedded"}})
        ev = EvalConfig(
            data=DataConfig(split="validation", context_length=128),
            n_tokens=16384,
            ce_loss=False,
            exclude_outliers=10.0,
        )
        summary = evaluate_run(run, ev)
    for name, r in result.results.items():
        m = summary["saes"][name]
        print(
            json.dumps(
                {
                    "sae": name,
                    "train_dead_fraction": len(r.dead_latents) / a.d_sae,
                    "train_fvu_last_window": r.metrics.get("fvu"),
                    "heldout_fvu": m["fvu"],
                    "heldout_l0": m["l0_mean"],
                    "heldout_dead_fraction": m["dead_fraction"],
                    "auxk_last_window": r.metrics.get("auxk"),
                }
            )
        )


if __name__ == "__main__":
    main()
