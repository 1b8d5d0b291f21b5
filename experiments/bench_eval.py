"""Benchmark: `sae-lab eval` with the forward up to the hook shared, against per-variant full forwards.

    python experiments/bench_eval.py RUN_DIR [--n-tokens 4096] [--rounds 2]

Loads the run's model and SAEs once, then in each of ``--rounds`` rounds evaluates them (the run's ``eval:``
section, ``n_tokens`` overridden) twice, in alternating order: with every variant (each spliced SAE, zero and mean
ablation of each hook) run from its hook's block (``SharedForward``, what `sae-lab eval` does), and with every
variant run as a full forward from the tokens (``share=False``: the code path before the change). Prints one JSON
object: seconds per round, their medians, the speed-up ratio, and whether the metrics are equal (==), listing any
that differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation import evaluate as E
from sae_lab.evaluation import inputs as I
from sae_lab.evaluation.suffix_forward import SharedForward
from sae_lab.rundir import RunDir


def timed_eval(targets, model, cfg, multiple, share: bool) -> tuple[float, dict, dict]:
    made = []

    def factory(bridge, hooks):
        made.append(SharedForward(bridge, hooks, share=share))
        return made[-1]

    E.SharedForward = factory
    try:
        t0 = time.perf_counter()
        out = E.evaluate_targets(targets, model, cfg, multiple)
        seconds = time.perf_counter() - t0
    finally:
        E.SharedForward = SharedForward
    return seconds, {n: r["metrics"] for n, r in out.items()}, made[0].counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--n-tokens", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    run = RunDir(args.run_dir)
    run_cfg = run.read_config()
    cfg = EvalConfig.model_validate({**(run_cfg.get("eval") or {}), "n_tokens": args.n_tokens})
    model = I.model_for(run_cfg, None)
    targets = I.run_targets(run)
    multiple = I.outlier_multiple(cfg, run_cfg)
    times: dict[str, list[float]] = {"shared": [], "full": []}
    metrics, counts, diffs = {}, {}, []
    for r in range(args.rounds):
        for share in [True, False] if r % 2 == 0 else [False, True]:
            key = "shared" if share else "full"
            seconds, metrics[key], counts[key] = timed_eval(targets, model, cfg, multiple, share)
            times[key].append(round(seconds, 2))
        diffs.append(_differences(metrics["shared"], metrics["full"]))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "run_dir": args.run_dir,
                "n_tokens": args.n_tokens,
                "saes": [t.name for t in targets],
                "seconds": times,
                "median_seconds": med,
                "speedup_full_over_shared": round(med["full"] / med["shared"], 3),
                "metrics_identical": not any(diffs),
                "differences": diffs,
                "variant_forwards": counts,
            },
            indent=1,
        )
    )


def _differences(a: dict, b: dict) -> dict:
    """{sae.metric: (a, b)} where the two evaluations differ (empty when identical)."""
    return {f"{n}.{k}": (v, b[n].get(k)) for n in a for k, v in a[n].items() if v != b[n].get(k)}


if __name__ == "__main__":
    main()
