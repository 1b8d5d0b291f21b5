"""Time `sae-lab explain` per feature (explain, then score) on one SAE directory of the embedded model.

    python experiments/bench_explain.py runs/embedded_sweep/saes/topk_k32 limit=8 overwrite=true

Writes into that SAE's feature database (use a copy). Prints seconds per feature and the mean scores."""

from __future__ import annotations

import json
import sys

import torch

from sae_lab.configbase import load_config
from sae_lab.explain import ExplainConfig, explain_sae_dir
from sae_lab.models import load_model


def main(sae_dir: str, overrides: list[str]) -> dict:
    cfg = load_config(ExplainConfig, None, overrides)
    out = explain_sae_dir(sae_dir, lambda: load_model("embedded", "cpu"), cfg)
    r = next(iter(out["saes"].values()))
    return {
        "threads": torch.get_num_threads(),
        "overrides": overrides,
        "explained_now": r["explained_now"],
        "scored_now": r["scored_now"],
        "explain_s_per_feature": round(r["explain_seconds"] / max(1, r["explained_now"]), 1),
        "score_s_per_feature": round(r["score_seconds"] / max(1, r["scored_now"]), 1),
        "mean": r["mean"],
        "unparsed_contexts": r["unparsed_contexts"],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2:]), indent=1))
