"""Why do TopK and Mutual Choice keep latents dead at the FVU-best learning rate? Warm-up against revival strength.

    python experiments/dead_latents_cause.py CACHE_DIR [--widths 2304 4608 9216] [--factors 1 2]
        [--warmups 0.02 0.1] [--aux-coefs 0.03125 0.25] [--epochs 2] [--out experiments/results/dead_latents_cause]

Issue 18, item 6 names the candidate causes: the revival (AuxK's strength), the dead-latent window, the lr rule and
its warm-up. ``lr_default.py`` fixed the window (``dead_tokens: auto``) and showed that at 2x ``lr: auto`` 36-48% of
TopK's latents die in training, so AuxK cannot bring them back. Here each sweep (one width, lr factor and warm-up
fraction; the same batches) trains TopK and Mutual Choice at each AuxK weight; held-out FVU and dead fraction as
in ``lr_default.py``. FVU / best is against the best FVU of that architecture and width over every row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from lr_default import train_and_evaluate

from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.saes import SAEConfig
from sae_lab.training.config import auto_lr


def name(arch: str, coef: float) -> str:
    return f"{arch}_aux{coef:g}"


def table(rows: list[dict]) -> str:
    best: dict = {}
    for r in rows:
        key = (r["arch"], r["width"])
        best[key] = min(best.get(key, float("inf")), r["fvu"])
    lines = [
        "| architecture | d_sae | lr (× auto) | warm-up | aux_coef | FVU | FVU / best | dead held out "
        "| dead in training |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["arch"], r["width"], r["factor"], r["warmup"], r["aux_coef"])):
        lines.append(
            f"| {r['arch']} | {r['width']:,} | {r['factor']:g} | {r['warmup']:g} | {r['aux_coef']:g} | {r['fvu']:.4f} "
            f"| {r['fvu'] / best[(r['arch'], r['width'])]:.3f} | {100 * r['dead_fraction']:.1f}% "
            f"| {100 * r['train_dead']:.1f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("--widths", type=int, nargs="+", default=[2304, 4608, 9216])
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0])
    p.add_argument("--warmups", type=float, nargs="+", default=[0.02, 0.1])
    p.add_argument("--aux-coefs", type=float, nargs="+", default=[1 / 32, 1 / 4])
    p.add_argument("--archs", nargs="+", default=["topk", "mutual_choice"])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--out", default="experiments/results/dead_latents_cause")
    a = p.parse_args()
    source = ActivationCache(a.cache).source()
    out, rows = Path(a.out), []
    out.mkdir(parents=True, exist_ok=True)
    for width in a.widths:
        for factor in a.factors:
            for warmup in a.warmups:
                saes = [
                    SAEConfig(architecture=arch, name=name(arch, c), d_in=source.d_in, d_sae=width, k=a.k,
                              hook_name=source.hook_name, aux_coef=c)
                    for arch in a.archs
                    for c in a.aux_coefs
                ]  # fmt: skip
                with tempfile.TemporaryDirectory() as tmp:
                    lr = factor * auto_lr(width)
                    found = train_and_evaluate(source, saes, lr, a.epochs, Path(tmp) / "run", warmup)
                for arch in a.archs:
                    for c in a.aux_coefs:
                        m = found[name(arch, c)]
                        rows.append({"arch": arch, "width": width, "factor": factor, "warmup": warmup, "aux_coef": c,
                                     "lr": factor * auto_lr(width), **m})  # fmt: skip
                        print(json.dumps(rows[-1]), flush=True)
                (out / "results.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    md = table(rows)
    (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
