"""Does a relative Adam eps on the encoder keep latents alive at the FVU-best learning rate? (issue 18, item 6)

    python experiments/dead_latents_adam.py CACHE_DIR [--widths 2304 4608 9216] [--factors 1 2 4]
        [--ratios 0 2] [--archs topk mutual_choice] [--epochs 2] [--out experiments/results/dead_latents_adam]

The cause found (sae_lab/training/optim.py, "Relative eps"): Adam gives a latent that fires on a few tokens an
update as large as a busy latent's, along the sign pattern of those tokens, so at high lr rare latents' encoder rows
leave their decoder rows and stop firing (at 2x ``lr: auto``, 4,608 latents, half of TopK's latents die between
steps 30 and 50, all of them having fired by step 4; their encoder-decoder cosine ends at 0.12 against 0.49 for the
live ones). ``train.encoder_eps_ratio`` damps exactly those updates. Each sweep (one width, lr factor and ratio;
the same batches) trains the architectures together; held-out FVU and dead fraction as in ``lr_default.py``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lr_default import ARCHITECTURES, train_and_evaluate

from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.saes import SAEConfig
from sae_lab.training.config import auto_lr

FVU_MARK, DEAD_MARK = 1.02, 0.02  # issue 18 item 6: FVU within 2% of the best, at most 2% dead held out


def table(rows: list[dict], factors: list[float]) -> str:
    """One line per (architecture, width, ratio): FVU and dead fraction at each lr factor; FVU / best is against
    the best FVU of that architecture and width over every ratio and factor; ✓ marks a cell meeting both marks."""
    best: dict = {}
    for r in rows:
        best[(r["arch"], r["width"])] = min(best.get((r["arch"], r["width"]), float("inf")), r["fvu"])
    lines = [
        "| architecture | d_sae | encoder_eps_ratio | "
        + " | ".join(f"×{f:g}: FVU / best, dead held out" for f in factors)
        + " |",
        "|---|---:|---:|" + "---|" * len(factors),
    ]
    keys = sorted({(r["arch"], r["width"], r["ratio"]) for r in rows})
    for arch, width, ratio in keys:
        cells = []
        for f in factors:
            m = [r for r in rows if (r["arch"], r["width"], r["ratio"], r["factor"]) == (arch, width, ratio, f)]
            if not m:
                cells.append("-")
                continue
            rel, dead = m[0]["fvu"] / best[(arch, width)], m[0]["dead_fraction"]
            ok = " ✓" if rel <= FVU_MARK and dead <= DEAD_MARK else ""
            cells.append(f"{rel:.3f}, {100 * dead:.1f}%{ok}")
        lines.append(f"| {arch} | {width:,} | {ratio:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("--widths", type=int, nargs="+", default=[2304, 4608, 9216])
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--ratios", type=float, nargs="+", default=[0.0, 2.0])
    p.add_argument("--archs", nargs="+", default=["topk", "mutual_choice"], choices=list(ARCHITECTURES))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--out", default="experiments/results/dead_latents_adam")
    a = p.parse_args(argv)
    source = ActivationCache(a.cache).source()
    out, rows = Path(a.out), []
    out.mkdir(parents=True, exist_ok=True)
    for width in a.widths:
        for factor in a.factors:
            for ratio in a.ratios:
                saes = [
                    SAEConfig(architecture=arch, name=arch, d_in=source.d_in, d_sae=width, k=a.k,
                              hook_name=source.hook_name, **ARCHITECTURES[arch])
                    for arch in a.archs
                ]  # fmt: skip
                lr = factor * auto_lr(width)
                with tempfile.TemporaryDirectory() as tmp:
                    found = train_and_evaluate(source, saes, lr, a.epochs, Path(tmp) / "run", encoder_eps_ratio=ratio)
                for arch in a.archs:
                    row = {"arch": arch, "width": width, "factor": factor, "ratio": ratio, "lr": lr}
                    rows.append({**row, **found[arch]})
                    print(json.dumps(rows[-1]), flush=True)
                (out / "results.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    md = table(rows, a.factors)
    (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
