"""Export a cache's kept activations for one hook as a float32 .npy (normalised), e.g. for peer benchmarks.

    python experiments/export_activations.py CACHE_DIR OUT.npy [--hook NAME] [--raw | --scale-of OTHER_CACHE]

``--scale-of`` normalises with another cache's scale, e.g. held-out rows with the training cache's, so that
both arrays are in the units an SAE trained on the training cache sees.
"""

from __future__ import annotations

import argparse

import numpy as np

from sae_lab.activations.cache_reader import ActivationCache


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache")
    ap.add_argument("out")
    ap.add_argument("--hook", default=None)
    ap.add_argument("--raw", action="store_true", help="do not apply the manifest's normalisation scale")
    ap.add_argument("--scale-of", default=None, help="use this other cache's normalisation scale")
    args = ap.parse_args()
    cache = ActivationCache(args.cache, verify="full")
    src = cache.source(args.hook)
    rows = [
        cache.acts(i, src.hook_name)[np.array(cache.keep(i, src.hook_name))].numpy() for i in range(len(cache.shards))
    ]
    data = np.concatenate(rows).astype(np.float32)
    scale = 1.0 if args.raw else src.norm_scale
    if args.scale_of:
        scale = ActivationCache(args.scale_of, verify="none").source(src.hook_name).norm_scale
    data *= scale
    np.save(args.out, data)
    print(f"{args.out}: {data.shape[0]} rows x {data.shape[1]} (scale {scale:.5f})")


if __name__ == "__main__":
    main()
