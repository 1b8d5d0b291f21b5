"""Does the default learning rate give a good dictionary for every architecture? An lr sweep at three widths.

    python experiments/lr_default.py CACHE_DIR [--widths 2304 4608 9216] [--factors 0.5 1 2] [--epochs 3]
        [--k 32] [--no-baseline] [--architectures topk ...] [--out experiments/results/lr_default]

For each width and lr factor, TopK, Mutual Choice, Feature Choice (Zipf capacities) and matching pursuit train on
the cache (same batches; the trainer's defaults: each architecture's `lr: auto` x factor, `encoder_eps_ratio: auto`,
`dead_tokens: auto`; the architectures sharing an lr in one sweep),
then `sae-lab eval`'s metrics on the embedded validation split (never trained on): held-out FVU, L0 and dead
fraction (latents that never fire on the held-out tokens). The baseline sweep (factor 1) uses the old fixed
dead-latent window of 1M tokens, longer than the run, so AuxK never runs in it.

The marks (issue 18, item 6): at factor 1, every SAE's FVU within 2% of its best FVU over the factors, and at most
2% dead latents held out. Writes results.json and results.md into --out.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sae_lab.activations.cache_reader import ActivationCache
from sae_lab.data.config import DataConfig
from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation.evaluate import evaluate_run
from sae_lab.saes import SAEConfig
from sae_lab.training import TrainConfig, train_sweep
from sae_lab.training.config import auto_lr

ARCHITECTURES = {"topk": {}, "mutual_choice": {}, "feature_choice": {"capacity_rule": "zipf"}, "matching_pursuit": {}}
OLD_DEAD_WINDOW = 1_000_000


def sweep(source, width: int, k: int, factor: float, epochs: int, dead_tokens, run: Path, archs=ARCHITECTURES) -> dict:
    """Train the four architectures at ``factor`` times their own ``lr: auto`` (one sweep per distinct lr, the
    same batches); their held-out metrics by architecture, each with the lr it trained at."""
    by_lr: dict[float, list] = {}
    for arch in archs:
        opts = ARCHITECTURES[arch]
        cfg = SAEConfig(
            architecture=arch, name=arch, d_in=source.d_in, d_sae=width, k=k, hook_name=source.hook_name,
            dead_tokens=dead_tokens, **opts,
        )  # fmt: skip
        by_lr.setdefault(factor * auto_lr(width, arch), []).append(cfg)
    metrics = {}
    for i, (lr, saes) in enumerate(by_lr.items()):
        found = train_and_evaluate(source, saes, lr, epochs, run.with_name(f"{run.name}_{i}"))
        metrics.update({name: {**m, "lr": lr} for name, m in found.items()})
    return metrics


def sweep_train_config(source, lr: float, epochs: int, **options) -> TrainConfig:
    """The schedule of these sweeps: ``epochs`` passes over the cache's training tokens (all but the 16,384 held out
    for the threshold calibration) in batches of 1,024, 2% warm-up, linear decay from 60%; ``options`` override."""
    n_train = source.n_tokens - 16384  # the calibration hold-out
    defaults = dict(batch_size=1024, total_tokens=epochs * n_train, lr=lr, warmup_fraction=0.02, decay_start=0.6)
    return TrainConfig(**{**defaults, "progress": False, **options})


def train_and_evaluate(
    source, saes: list, lr: float, epochs: int, run: Path, warmup_fraction: float = 0.02, **train_options
) -> dict:
    """Train ``saes`` in one sweep on the cache ``source`` (``epochs`` passes over its training tokens, batches of
    1,024), then their held-out FVU, L0 and dead fraction on 16k embedded validation tokens, by SAE name."""
    cfg = sweep_train_config(source, lr, epochs, warmup_fraction=warmup_fraction, log_every_steps=50, **train_options)
    t0 = time.perf_counter()
    train_sweep(saes, source, cfg, run, extra_config={"model": {"name": "embedded"}})
    seconds = time.perf_counter() - t0
    ev = EvalConfig(
        data=DataConfig(split="validation", context_length=128), n_tokens=16384, ce_loss=False, exclude_outliers=10.0
    )
    summary = evaluate_run(run, ev)["saes"]
    status = json.loads((run / "run.json").read_text())["results"]
    return {
        sae.name: {
            "fvu": summary[sae.name]["fvu"],
            "l0": summary[sae.name]["l0_mean"],
            "dead_fraction": summary[sae.name]["dead_fraction"],
            "train_seconds": seconds,
            "train_dead": status[sae.name]["n_dead"] / sae.d_sae,
            "train_fvu": status[sae.name].get("fvu"),
        }
        for sae in saes
    }


def table(rows: list[dict], factors: list[float], archs=ARCHITECTURES) -> str:
    """One line per (architecture, width): FVU at each factor, the default's ratio to the best, dead fractions."""
    head = (
        "| architecture | d_sae | "
        + " | ".join(f"FVU x{f:g}" for f in factors)
        + " | FVU(auto) / best | dead held out x"
        + " / x".join(f"{f:g}" for f in factors)
        + " | old window: FVU, dead |"
    )
    lines = [head, "|" + "---|" * (len(factors) + 5)]
    for arch in archs:
        for width in sorted({r["width"] for r in rows}):
            by = {r["factor"]: r["metrics"][arch] for r in rows if r["width"] == width and not r["baseline"]}
            base = [r["metrics"][arch] for r in rows if r["width"] == width and r["baseline"]]
            best = min(m["fvu"] for m in by.values())
            old = f"{base[0]['fvu']:.4f}, {100 * base[0]['dead_fraction']:.1f}%" if base else "-"
            lines.append(
                f"| {arch} | {width:,} | "
                + " | ".join(f"{by[f]['fvu']:.4f}" for f in factors)
                + f" | {by[1.0]['fvu'] / best:.3f} | "
                + " / ".join(f"{100 * by[f]['dead_fraction']:.1f}%" for f in factors)
                + f" | {old} |"
            )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache")
    p.add_argument("--widths", type=int, nargs="+", default=[2304, 4608, 9216])
    p.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--no-baseline", action="store_true", help="skip the old-window (1M tokens) sweep")
    p.add_argument("--architectures", nargs="+", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    p.add_argument("--out", default="experiments/results/lr_default")
    a = p.parse_args()
    if 1.0 not in a.factors:
        p.error("--factors must include 1 (the default)")
    source = ActivationCache(a.cache).source()
    out, rows = Path(a.out), []
    out.mkdir(parents=True, exist_ok=True)
    for width in a.widths:
        runs = [(f, "auto", False) for f in a.factors] + ([] if a.no_baseline else [(1.0, OLD_DEAD_WINDOW, True)])
        for factor, window, baseline in runs:
            with tempfile.TemporaryDirectory() as tmp:
                metrics = sweep(source, width, a.k, factor, a.epochs, window, Path(tmp) / "run", a.architectures)
            rows.append(
                {
                    "width": width,
                    "factor": factor,
                    "baseline": baseline,
                    "dead_tokens": window,
                    "metrics": metrics,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            (out / "results.json").write_text(json.dumps({"args": vars(a), "rows": rows}, indent=1))
    md = table(rows, a.factors, a.architectures)
    (out / "results.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
