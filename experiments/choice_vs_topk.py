"""Choice vs TopK at matched sparsity (Ayonrinde 2024): fewer dead latents, better reconstruction at equal L0?

    python experiments/choice_vs_topk.py [--seeds 0 1] [--ks 16 32 64] [--tokens 409600] [--eval-tokens 4096]
        [--layer 15] [--expansion 4] [--batch 1024] [--work runs/experiments/choice_vs_topk] [--out DIR] [--quick]

Nine SAEs per sweep: TopK, Mutual Choice, Feature Choice with uniform and with Zipf capacities (each with and
without aux_zipf_loss), and MP (matching pursuit); every SAE has sae-lab's default AuxK. One sweep per (k, seed)
trains all nine on one pass over one activation cache of the embedded model's ``blocks.{layer}.hook_resid_post``
(the same cache, the same batches and the same train.seed for all nine); ``sae-lab eval`` then measures each on
the same held-out tokens (validation split): FVU, L0 under the inference rule, dead and dense fractions, CE loss
recovered under both definitions (sae-lab's ``loss_recovered_zero`` / ``_mean`` and SAELens's
``saelens_ce_loss_score``). Underused fraction: run.json's (latents below the Zipf-expected density of their rank,
from the training density EMA). Zipf fit: the least-squares line of log density against log rank over the latents
alive on the held-out tokens, with densities under the inference rule from one more pass over the same positions
eval uses (eval.json keeps only the dead/dense fractions, not per-latent densities).

Matched sparsity: a variant and TopK are compared at the same held-out L0, at each k clipped into the L0 range
that both span in every seed (choice SAEs' thresholds miss k a little): each metric is interpolated linearly in
log L0 between the k points of the variant and of TopK, per seed, never extrapolated. Differences against TopK
are paired by seed (same tokens, batches and seed). A claim "holds" at a point when the difference favours the
choice SAE in every seed, "does not hold" when it favours it in none, else "mixed". Every number is the mean ±
half-range over seeds.

Writes ``OUT/results.json``, ``OUT/choice_vs_topk.md`` and Plotly figures (``OUT/*.html``, offline); caches and
runs go to ``--work``. Runs resume (same --work): a finished sweep is not retrained.

Full run (the defaults: 2 seeds x k 16, 32, 64 = 6 sweeps of 9 SAEs with 2,304 latents, 400 steps of 1,024
tokens each, 4,096 held-out tokens): about 30 min on 2 idle CPU cores. Cache ~1 min (the ~100k-token training
split; 16,384 of its tokens are held out to calibrate the choice SAEs' thresholds); training ~17 min (a 9-SAE
step measured at 0.32 s for k 16 and 0.56 s for k 64, MP being the slowest member); eval ~10 min (~25 ms per
held-out token per sweep: 12 forwards from block 16 with CE and KL over the 49k vocabulary), so
``--eval-tokens 8192`` adds ~10 min. ``--quick``: the reduced CI version (4,096 cached tokens, 576 latents,
k 8 and 16, 2 seeds, 8 steps of 512 tokens, 128 held-out tokens), ~30 s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))
from experiment_args import apply_preset, run_in_work  # noqa: E402

BASELINE = "topk"
VARIANTS = {  # name: SAE options (k and width added per sweep); "-auxzipf": aux_zipf_loss on
    "topk": {"architecture": "topk"},
    "topk-auxzipf": {"architecture": "topk", "aux_zipf": True},
    "mutual_choice": {"architecture": "mutual_choice"},
    "mutual_choice-auxzipf": {"architecture": "mutual_choice", "aux_zipf": True},
    "fc_uniform": {"architecture": "feature_choice", "capacity_rule": "uniform"},
    "fc_uniform-auxzipf": {"architecture": "feature_choice", "capacity_rule": "uniform", "aux_zipf": True},
    "fc_zipf": {"architecture": "feature_choice", "capacity_rule": "zipf"},
    "fc_zipf-auxzipf": {"architecture": "feature_choice", "capacity_rule": "zipf", "aux_zipf": True},
    "mp": {"architecture": "matching_pursuit"},
}
CHOICE = [v for v, o in VARIANTS.items() if o["architecture"] in ("mutual_choice", "feature_choice")]
METRICS = {  # row key: (eval.json key or None, column title, digits)
    "l0": ("l0_mean", "held-out L0", 1),
    "fvu": ("fvu", "FVU", 4),
    "ce_zero": ("loss_recovered_zero", "CE rec. (zero)", 4),
    "ce_mean": ("loss_recovered_mean", "CE rec. (mean)", 4),
    "ce_saelens": ("saelens_ce_loss_score", "SAELens CE score", 4),
    "dead": ("dead_fraction", "dead", 4),
    "dense": ("dense_fraction", "dense", 4),
    "underused": (None, "underused (train)", 4),
    "zipf_slope": (None, "Zipf slope", 3),
    "zipf_r2": (None, "Zipf R²", 3),
}
MATCHED = ["fvu", "ce_zero", "ce_mean", "ce_saelens"]  # compared at matched L0; larger is better except FVU
PRESETS = {
    "full": dict(seeds=[0, 1], ks=[16, 32, 64], tokens=409_600, eval_tokens=4096, expansion=4, batch=1024),
    "quick": dict(seeds=[0, 1], ks=[8, 16], tokens=4096, eval_tokens=128, expansion=1, batch=512),
}


def run_config(a: argparse.Namespace, k: int, seed: int):
    """The RunConfig of the (k, seed) sweep: the nine variants on the shared cache."""
    from sae_lab.pipeline import RunConfig

    saes = [{"name": n, "expansion_factor": a.expansion, "k": k, **o} for n, o in VARIANTS.items()]
    return RunConfig.model_validate(
        {
            "run_dir": str(a.work / "runs" / f"k{k}_seed{seed}"),
            "model": {"name": "embedded"},
            "data": {"source": "embedded", "split": "train", "context_length": 128, "max_tokens": a.cache_tokens},
            "activations": {"hooks": [a.hook], "batch_size": 16, "exclude_outliers": 10.0},
            "cache": {"path": str(a.work / "cache" / f"layer{a.layer}"), "shard_contexts": 64},
            "train": {
                "batch_size": a.batch,
                "total_tokens": a.tokens,
                "seed": seed,
                "warmup_fraction": 0.02,
                "decay_start": 0.6,
                "calibrate_tokens": a.calibrate_tokens,
                "log_every_steps": 20,
                "progress": not a.quick,
            },
            "saes": saes,
            "eval": {"n_tokens": a.eval_tokens, "data": {"source": "embedded", "split": "validation"}},
        }
    )


@torch.inference_mode()
def heldout_rows(model, cfg, hook: str, multiple: float | None) -> torch.Tensor:
    """The raw activations [n, d] at the positions eval keeps (its batches, special-token mask and outlier rule)."""
    from sae_lab.activations.generate import ActivationGenerator
    from sae_lab.activations.masks import keep_mask
    from sae_lab.evaluation import inputs as I

    gen = ActivationGenerator(model, [hook], exclude_special=False)
    threshold = I.first_batch_thresholds(gen, cfg, multiple)[hook]
    rows = []
    for _, tokens in I.iter_batches(cfg, model.tokenizer):
        acts = gen.forward(tokens)[hook]
        rows.append(acts[keep_mask(acts, I.special_mask(tokens, model.tokenizer, cfg), threshold)])
    return torch.cat(rows)


@torch.inference_mode()
def densities(sae, x: torch.Tensor, chunk: int = 2048) -> np.ndarray:
    """Per-latent firing rate of ``sae.encode`` (the inference rule) on rows ``x``."""
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    for part in x.split(chunk):
        fired += (sae.encode(part) != 0).sum(0)
    return (fired.double() / x.shape[0]).numpy()


def zipf_fit(density: np.ndarray) -> tuple[float, float]:
    """(slope, R²) of log density against log rank (1 = densest) over the alive latents."""
    p = np.sort(density[density > 0])[::-1]
    if p.size < 3:
        return math.nan, math.nan
    x, y = np.log(np.arange(1, p.size + 1)), np.log(p)
    slope, icpt = np.polyfit(x, y, 1)
    return float(slope), float(1 - ((y - slope * x - icpt) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def rank_samples(density: np.ndarray, n: int = 48) -> list[list[float]]:
    """[rank, density] at ~n log-spaced ranks of the alive latents (for the rank-density figure)."""
    p = np.sort(density[density > 0])[::-1]
    ranks = np.unique(np.geomspace(1, max(p.size, 1), n).astype(int)) if p.size else []
    return [[int(r), float(p[r - 1])] for r in ranks]


def sweep(a: argparse.Namespace, model, k: int, seed: int, x_eval: torch.Tensor, timings: dict) -> list[dict]:
    """Train (or resume) and evaluate the (k, seed) sweep; one row per variant (seconds taken into ``timings``)."""
    from sae_lab.evaluation import evaluate_run
    from sae_lab.evaluation.inputs import run_targets
    from sae_lab.pipeline import train_run
    from sae_lab.rundir import RunDir

    cfg = run_config(a, k, seed)
    t0 = time.perf_counter()
    train_run(cfg, model=model)
    t1 = time.perf_counter()
    summary = evaluate_run(cfg.run_dir, cfg.eval, model)
    trained = RunDir(cfg.run_dir).read_status()["results"]
    rows = []
    for ref in run_targets(RunDir(cfg.run_dir)):
        m, d = summary["saes"][ref.name], densities(ref.sae.eval(), x_eval)
        row = {"k": k, "seed": seed, "variant": ref.name, "d_sae": ref.sae.cfg.d_sae}
        row.update({key: m[src] for key, (src, _, _) in METRICS.items() if src})
        row["underused"] = trained[ref.name]["n_underused"] / ref.sae.cfg.d_sae
        row["train_dead"] = trained[ref.name]["n_dead"] / ref.sae.cfg.d_sae
        row["train_l0"] = m.get("train_l0")
        row["zipf_slope"], row["zipf_r2"] = zipf_fit(d)
        row["dead_recount"] = float((d == 0).mean())  # = eval's dead fraction (the same positions)
        row["rank_density"] = rank_samples(d)
        rows.append(row)
    timings[f"k{k}_seed{seed}"] = {"train_s": t1 - t0, "eval_s": time.perf_counter() - t1}
    print(f"k={k} seed={seed}: train {t1 - t0:.0f} s, eval {time.perf_counter() - t1:.0f} s", flush=True)
    return sorted(rows, key=lambda r: list(VARIANTS).index(r["variant"]))


def common_range(rows: list[dict], variants: tuple[str, ...]) -> tuple[float, float]:
    """(lo, hi): the held-out L0 range that every seed's k points of every one of ``variants`` span."""
    curves = [[r["l0"] for r in rows if r["variant"] == v and r["seed"] == s] for v in variants for s in seeds(rows)]
    return max(min(c) for c in curves), min(max(c) for c in curves)


def seeds(rows: list[dict]) -> list[int]:
    return sorted({r["seed"] for r in rows})


def interp(rows: list[dict], variant: str, seed: int, key: str, l0: float) -> float:
    """``key`` of ``variant`` (one seed) at held-out L0 ``l0``: linear in log L0 between its k points."""
    pts = sorted((r for r in rows if r["variant"] == variant and r["seed"] == seed), key=lambda r: r["l0"])
    return float(np.interp(math.log(l0), np.log([r["l0"] for r in pts]), [r[key] for r in pts]))


def matched(rows: list[dict], ks: list[int]) -> list[dict]:
    """Each variant and TopK compared at equal held-out L0: at each k clipped into the L0 range both span in
    every seed (interpolated, never extrapolated); ``KEY`` is the variant's value, ``KEY_topk`` TopK's."""
    out = []
    for v in (v for v in VARIANTS if v != BASELINE):
        lo, hi = common_range(rows, (v, BASELINE))
        for k in ks if lo <= hi else []:
            l0 = min(max(float(k), lo), hi)
            for s in seeds(rows):
                row = {"k": k, "seed": s, "variant": v, "l0": l0}
                for key in MATCHED:
                    row[key], row[f"{key}_topk"] = interp(rows, v, s, key, l0), interp(rows, BASELINE, s, key, l0)
                out.append(row)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", help="train.seed of each sweep (default 0 1)")
    ap.add_argument("--ks", type=int, nargs="+", help="k of each sweep (default 16 32 64; quick 8 16)")
    ap.add_argument("--tokens", type=int, help="training tokens per sweep (default 409,600; quick 4,096)")
    ap.add_argument("--eval-tokens", type=int, help="held-out tokens (default 4,096; quick 128)")
    ap.add_argument("--expansion", type=int, help="d_sae / d_in (default 4; quick 1)")
    ap.add_argument("--batch", type=int, help="tokens per step (default 1,024; quick 512)")
    ap.add_argument("--layer", type=int, default=15, help="residual stream after this block")
    ap.add_argument("--work", type=Path, help="caches and runs (default: runs/experiments/choice_vs_topk; quick: temp)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "choice_vs_topk")
    ap.add_argument("--quick", action="store_true", help="the reduced CI version")
    a = ap.parse_args(argv)
    apply_preset(a, PRESETS)
    a.hook = f"blocks.{a.layer}.hook_resid_post"
    a.cache_tokens, a.calibrate_tokens = (4096, 512) if a.quick else (None, 16_384)
    return run_in_work(a, run, "runs/experiments/choice_vs_topk")
    a.work = a.work or Path("runs/experiments/choice_vs_topk")
    return run(a)


def run(a: argparse.Namespace) -> dict:
    """Cache, the sweeps, the matched-L0 comparison and the outputs."""
    from choice_vs_topk_report import write_outputs

    from sae_lab.evaluation.inputs import outlier_multiple
    from sae_lab.models import load_model
    from sae_lab.pipeline import build_cache_for

    t0 = time.perf_counter()
    model = load_model("embedded", "cpu")
    first = run_config(a, a.ks[0], a.seeds[0])
    build_cache_for(first, model)
    x_eval = heldout_rows(model, first.eval, a.hook, outlier_multiple(first.eval, first.model_dump()))
    timings = {"setup_s": time.perf_counter() - t0}
    rows = [row for k in a.ks for seed in a.seeds for row in sweep(a, model, k, seed, x_eval, timings)]
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "d_in": int(x_eval.shape[1]),
        "heldout_rows": int(x_eval.shape[0]),
        "rows": rows,
        "matched": matched(rows, a.ks),
        "timings": timings,
        "seconds": time.perf_counter() - t0,
    }
    write_outputs(result, a.out)
    return result


if __name__ == "__main__":
    main()
