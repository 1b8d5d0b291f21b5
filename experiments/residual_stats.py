"""Why sae-lab drops norm outliers and starts b_dec at the data's median: statistics of a residual stream.

    python experiments/residual_stats.py [--hook blocks.15.hook_resid_post] [--tokens 16384] [--multiple 10]

Reads the embedded model's activations at ``--hook`` on the embedded corpus (train split, contexts of 128
tokens), BOS/EOS/pad excluded as training excludes them, and prints: the median and largest token norm, how
many positions exceed ``--multiple`` times the median and their share of the total variance, and the share of
E‖x‖² that the mean vector alone holds (with and without those outliers). docs/design.md quotes the figures.
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from sae_lab.activations.hooks import stop_layer
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts, special_token_mask
from sae_lab.models import load_model


def activations(hook: str, n_tokens: int, context_length: int = 128, batch: int = 16) -> torch.Tensor:
    """Rows ``[n, d]`` of ``hook`` on the embedded train split, BOS/EOS/pad positions left out."""
    model = load_model("embedded", device="cpu")
    cfg = DataConfig(source="embedded", split="train", context_length=context_length)
    contexts = np.stack(list(itertools.islice(iter_contexts(cfg, model.tokenizer), n_tokens // context_length)))
    rows = []
    for i in range(0, len(contexts), batch):
        tokens = contexts[i : i + batch]
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(
                torch.as_tensor(tokens, dtype=torch.long), names_filter=[hook], stop_at_layer=stop_layer([hook])
            )
        keep = ~torch.as_tensor(special_token_mask(tokens, model.tokenizer))
        rows.append(cache[hook][keep].float())
    return torch.cat(rows)


def stats(x: torch.Tensor, multiple: float) -> dict[str, float]:
    """Norm statistics, the outliers' share of the variance, and the mean's share of E‖x‖²."""
    norms = x.norm(dim=-1)
    median = norms.median().item()
    outlier = norms > multiple * median
    centred = ((x - x.mean(0)) ** 2).sum(-1)
    inliers = x[~outlier]
    return {
        "positions": len(x),
        "median_norm": median,
        "max_norm": norms.max().item(),
        "max_over_median": norms.max().item() / median,
        "outliers": int(outlier.sum()),
        "outlier_fraction": outlier.float().mean().item(),
        "outlier_share_of_variance": (centred[outlier].sum() / centred.sum()).item(),
        "mean_share_of_energy": (x.mean(0).pow(2).sum() / x.pow(2).sum(-1).mean()).item(),
        "mean_share_of_energy_without_outliers": (inliers.mean(0).pow(2).sum() / inliers.pow(2).sum(-1).mean()).item(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hook", default="blocks.15.hook_resid_post")
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--multiple", type=float, default=10.0)
    args = ap.parse_args()
    for key, value in stats(activations(args.hook, args.tokens), args.multiple).items():
        print(f"{key:40s} {value:.4g}" if isinstance(value, float) else f"{key:40s} {value}")


if __name__ == "__main__":
    main()
