"""g-SAE vs TopK (Olmo et al. 2024): does gradient-aware selection recover more of the model's loss at equal L0?

    python experiments/gsae_vs_topk.py [--seeds 0 1] [--ks 16 32] [--betas 1 8] [--tokens 204800]
        [--eval-tokens 4096] [--layer 15] [--expansion 4] [--batch 1024] [--buffer 16384]
        [--work runs/experiments/gsae_vs_topk] [--out DIR] [--no-cost] [--quick]

One sweep per seed trains, for every k, a plain TopK and one g-SAE per β (TopK with ``selection: gradient``,
``grad_beta`` = β; ``sae_lab/saes/README.md``, "g-SAE") on the same rows of one live gradient stream of the
embedded model's ``blocks.{layer}.hook_resid_post`` (``GradientStreamingSource``: every row carries its activation
and ∂loss/∂activation; the plain TopKs read the same rows and ignore the gradient). ``sae-lab eval`` then measures
every SAE on the same held-out tokens (validation split). A g-SAE's inference rule is plain TopK (no gradient at
inference), so both have held-out L0 = k: the comparison at equal L0 is by construction, paired by seed.

Reported: held-out FVU, L0, CE loss recovered (sae-lab's zero- and mean-ablation definitions and SAELens's
``ce_loss_score``), KL(clean ‖ spliced) per token (``kl_sae``), dead fraction; the verdict of "g-SAE beats TopK"
per metric, k and β ("holds" when every seed's difference favours the g-SAE, "does not hold" when none does,
else "mixed"); and the training cost: the gradient sweep's tokens/s against a plain TopK sweep from the
activation-only stream on the same tokens (first seed; ``--no-cost`` skips it). Every number is the mean ±
half-range over seeds. The paper's steering claim is not measured (see the report's notes).

Writes ``OUT/results.json``, ``OUT/gsae_vs_topk.md`` and Plotly figures (``OUT/*.html``); runs go to ``--work``
and resume there (a finished sweep is not retrained; its timing is kept in ``WORK/timings.json``).

Full run (the defaults: 2 seeds, k 16 and 32, β 1 and 8: 6 SAEs of 2,304 latents per sweep, 200 steps of 1,024
tokens): about 40 min on 2 idle CPU cores, nearly all of it the model's forward and backward (~250 tokens/s,
BENCHMARKS.md §20): ~15 min per seed, ~4 min for the plain-stream cost reference, ~1.5 min of eval per seed.
``--quick``: the reduced CI version (tiny sizes, ~30 s; ``tests/test_experiments_gsae_vs_topk.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))
from experiment_args import apply_preset, run_in_work  # noqa: E402

BASELINE = "topk"
METRICS = {  # row key: (eval.json key, column title, digits, lower is better)
    "l0": ("l0_mean", "held-out L0", 1, False),
    "fvu": ("fvu", "FVU", 4, True),
    "ce_zero": ("loss_recovered_zero", "CE rec. (zero)", 4, False),
    "ce_mean": ("loss_recovered_mean", "CE rec. (mean)", 4, False),
    "ce_saelens": ("saelens_ce_loss_score", "SAELens CE score", 4, False),
    "kl": ("kl_sae", "KL (nats/token)", 5, True),
    "dead": ("dead_fraction", "dead", 4, True),
}
CLAIMS = ["ce_zero", "ce_mean", "ce_saelens", "kl", "fvu"]  # g-SAE vs TopK, paired by seed, at each k
PRESETS = {
    "full": dict(
        seeds=[0, 1], ks=[16, 32], betas=[1.0, 8.0], tokens=204_800, eval_tokens=4096, expansion=4, batch=1024,
        buffer=16_384, context=128, contexts_per_forward=16, norm_contexts=64,
    ),
    "quick": dict(
        seeds=[0, 1], ks=[8], betas=[1.0, 8.0], tokens=1024, eval_tokens=64, expansion=1, batch=256,
        buffer=512, context=64, contexts_per_forward=8, norm_contexts=8,
    ),
}  # fmt: skip


def variant(beta: float | None) -> str:
    """The variant's name: ``topk`` or ``gsae_b{β}``."""
    return BASELINE if beta is None else f"gsae_b{beta:g}"


def run_config(a: argparse.Namespace, seed: int, gradients: bool):
    """The RunConfig of one sweep: for each k a TopK and (``gradients``) a g-SAE per β, on the live stream."""
    from sae_lab.pipeline import RunConfig

    betas = [None] + (list(a.betas) if gradients else [])
    saes = [
        {"architecture": "topk", "name": f"{variant(b)}_k{k}", "expansion_factor": a.expansion, "k": k}
        | ({} if b is None else {"selection": "gradient", "grad_beta": b})
        for k in a.ks
        for b in betas
    ]
    name = f"seed{seed}" if gradients else f"plain_stream_seed{seed}"
    return RunConfig.model_validate(
        {
            "run_dir": str(a.work / "runs" / name),
            "model": {"name": "embedded"},
            "data": {"source": "embedded", "split": "train", "context_length": a.context},
            "activations": {
                "hooks": [a.hook],
                "batch_size": a.contexts_per_forward,
                "norm_sample_contexts": a.norm_contexts,
                "exclude_outliers": 10.0,
            },
            "cache": None,
            "train": {
                "batch_size": a.batch,
                "total_tokens": a.tokens,
                "seed": seed,
                "warmup_fraction": 0.02,
                "decay_start": 0.6,
                "b_dec_init_tokens": min(8192, a.tokens),  # read from the stream: no more than the run trains on
                "log_every_steps": 20,
                "progress": not a.quick,
            },
            "saes": saes,
            "eval": {"n_tokens": a.eval_tokens, "data": {"source": "embedded", "split": "validation"}},
        }
    )


def train(a: argparse.Namespace, model, cfg) -> float:
    """Train (or resume) the sweep ``cfg`` from a live stream with a ``--buffer``-token shuffle window (the
    gradient stream when a g-SAE is in it); returns the seconds this call took."""
    from sae_lab.activations.grad_stream import GradientStreamingSource
    from sae_lab.activations.source import hook_parts
    from sae_lab.activations.stream import StreamingSource
    from sae_lab.pipeline import _needs_gradients, resolve_hooks, sae_configs
    from sae_lab.training import train_sweep

    t0 = time.perf_counter()
    cfg = resolve_hooks(cfg, model.hook_names)
    stream = GradientStreamingSource if _needs_gradients(cfg) else StreamingSource
    source = stream(model, cfg.data, cfg.activations, cfg.train_hooks[0], buffer_tokens=a.buffer)
    saes = sae_configs(cfg, {h: p.d_in for h, p in hook_parts(source).items()})
    extra = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("train", "saes", "run_dir")}
    train_sweep(saes, source, cfg.train, Path(cfg.run_dir), extra_config=extra)
    return time.perf_counter() - t0


def timed_train(a: argparse.Namespace, model, cfg, timings: dict) -> dict:
    """``train`` once per run: a finished run keeps the timing recorded when it trained (WORK/timings.json). A run
    resumed after an interruption records the resumed call's time only (its cost figures are then too low)."""
    from sae_lab.rundir import RunDir

    path, name = a.work / "timings.json", Path(cfg.run_dir).name
    saved = json.loads(path.read_text()) if path.is_file() else {}
    done = RunDir(cfg.run_dir).read_status().get("status") == "done"
    if not (done and name in saved):
        seconds = train(a, model, cfg)
        saved[name] = {"train_s": seconds, "tokens": a.tokens, "saes": [s.name for s in cfg.saes]}
        path.write_text(json.dumps(saved, indent=2))
    timings[name] = saved[name]
    return saved[name]


def sweep(a: argparse.Namespace, model, seed: int, timings: dict) -> list[dict]:
    """Train and evaluate one seed's sweep; one row per (k, variant)."""
    from sae_lab.evaluation import evaluate_run

    cfg = run_config(a, seed, gradients=True)
    trained = timed_train(a, model, cfg, timings)
    t0 = time.perf_counter()
    summary = evaluate_run(cfg.run_dir, cfg.eval, model)
    timings[f"seed{seed}"]["eval_s"] = time.perf_counter() - t0
    print(f"seed {seed}: train {trained['train_s']:.0f} s, eval {time.perf_counter() - t0:.0f} s", flush=True)
    rows = []
    for k in a.ks:
        for b in [None, *a.betas]:
            m = summary["saes"][f"{variant(b)}_k{k}"]
            rows.append(
                {"k": k, "seed": seed, "variant": variant(b), "beta": b}
                | {key: float(m[src]) for key, (src, *_) in METRICS.items()}
            )
    return rows


def cost(a: argparse.Namespace, model, timings: dict) -> dict:
    """Training cost per token: the first seed's gradient sweep against its TopKs alone from the plain stream."""
    plain = timed_train(a, model, run_config(a, a.seeds[0], gradients=False), timings)
    grad = timings[f"seed{a.seeds[0]}"]
    return {
        "gradient_stream_tokens_per_s": grad["tokens"] / grad["train_s"],
        "plain_stream_tokens_per_s": plain["tokens"] / plain["train_s"],
        "ratio": grad["train_s"] / plain["train_s"],
        "gradient_saes": grad["saes"],
        "plain_saes": plain["saes"],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", help="train.seed of each sweep (default 0 1)")
    ap.add_argument("--ks", type=int, nargs="+", help="k of the SAEs (default 16 32; quick 8)")
    ap.add_argument("--betas", type=float, nargs="+", help="g-SAE β values (default 1 8)")
    ap.add_argument("--tokens", type=int, help="training tokens per sweep (default 204,800; quick 1,024)")
    ap.add_argument("--eval-tokens", type=int, help="held-out tokens (default 4,096; quick 64)")
    ap.add_argument("--expansion", type=int, help="d_sae / d_in (default 4; quick 1)")
    ap.add_argument("--batch", type=int, help="tokens per step (default 1,024; quick 256)")
    ap.add_argument("--buffer", type=int, help="the stream's shuffle window in tokens (default 16,384; quick 512)")
    ap.add_argument("--layer", type=int, default=15, help="residual stream after this block")
    ap.add_argument("--work", type=Path, help="runs (default: runs/experiments/gsae_vs_topk; quick: a temp dir)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "gsae_vs_topk")
    ap.add_argument("--no-cost", dest="cost", action="store_false", help="skip the plain-stream cost reference")
    ap.add_argument("--quick", action="store_true", help="the reduced CI version")
    a = ap.parse_args(argv)
    apply_preset(a, PRESETS)
    a.hook = f"blocks.{a.layer}.hook_resid_post"
    return run_in_work(a, run, "runs/experiments/gsae_vs_topk")
    a.work = a.work or Path("runs/experiments/gsae_vs_topk")
    return run(a)


def run(a: argparse.Namespace) -> dict:
    """The sweeps, the cost reference and the outputs."""
    from gsae_vs_topk_report import write_outputs

    from sae_lab.models import load_model

    t0 = time.perf_counter()
    a.work.mkdir(parents=True, exist_ok=True)
    model = load_model("embedded", "cpu")
    timings: dict = {}
    rows = [row for seed in a.seeds for row in sweep(a, model, seed, timings)]
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
        "rows": rows,
        "cost": cost(a, model, timings) if a.cost else None,
        "timings": timings,
        "seconds": time.perf_counter() - t0,
    }
    write_outputs(result, a.out)
    return result


if __name__ == "__main__":
    main()
