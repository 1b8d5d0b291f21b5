"""Which revival keeps a choice SAE's latents alive at a high learning rate? Variants of one SAE in one sweep.

    python experiments/revival_probe.py CACHE_DIR --arch mutual_choice --width 4608 --factor 2
        [--encoder-eps-ratio 2] --variant default '{}' --variant auxk32 '{"aux_k": 32}' ...

Each variant is a name and a JSON object of SAE options (``architecture`` among them overrides --arch); all
train together on the same batches (as ``lr_default.py``: batches of 1,024, 2 epochs, 2% warm-up) at ``factor``
times the base ``lr: auto`` rule, then held-out FVU, L0 and dead fraction on 16k embedded validation tokens, beside
the dead fraction and FVU of the last training window. Options a variant leaves out take the current defaults
(the rows of ``results/revival_probe/probe.jsonl`` with options ``{}`` were run before Mutual Choice's ``dead_floor``
default became 8: they are floor 0). Issue 18, item 6: BENCHMARKS.md §13.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("--arch", default="mutual_choice")
    p.add_argument("--width", type=int, default=4608)
    p.add_argument("--factor", type=float, default=2.0)
    p.add_argument("--encoder-eps-ratio", default="auto")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    p.add_argument("--out", default=None, help="append the results as JSON lines to this file")
    a = p.parse_args()
    source = ActivationCache(a.cache).source()
    saes = [
        SAEConfig(**{"architecture": a.arch, **json.loads(opts)}, name=name, d_in=source.d_in, d_sae=a.width, k=32,
                  hook_name=source.hook_name)
        for name, opts in a.variant
    ]  # fmt: skip
    ratio = a.encoder_eps_ratio if a.encoder_eps_ratio == "auto" else float(a.encoder_eps_ratio)
    lr = a.factor * auto_lr(a.width)
    with tempfile.TemporaryDirectory() as tmp:
        metrics = train_and_evaluate(source, saes, lr, a.epochs, Path(tmp) / "run", encoder_eps_ratio=ratio)
    for (name, opts), sae in zip(a.variant, saes):
        m = metrics[name]
        row = {"arch": sae.architecture, "width": a.width, "factor": a.factor, "lr": lr, "encoder_eps_ratio": ratio,
               "variant": name, "options": json.loads(opts), **m}  # fmt: skip
        held = f"FVU {m['fvu']:.4f}  L0 {m['l0']:.1f}  dead held out {100 * m['dead_fraction']:.1f}%"
        train = f"dead in training {100 * m['train_dead']:.1f}%  training FVU {m['train_fvu']:.4f}"
        print(f"{name:>16}: {held}  {train}", flush=True)
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
