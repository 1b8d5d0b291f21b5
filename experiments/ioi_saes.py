"""IOI with SAEs that carry the behaviour (Marks et al. 2024's feature circuits; Makelov et al. 2024's supervised
dictionaries and three counts), on the embedded model.

    python experiments/ioi_saes.py [--seeds 0 1] [--layers 6 12 18] [--templates 0 4] [--archs topk mp] [--k 8]
        [--expansion 4] [--tokens 131072] [--epochs 3] [--work runs/experiments/ioi_saes] [--out DIR] [--quick]

1. SAEs on the task distribution (``ioi_task_saes``): IOI sentences of the chosen templates (train split: a fixed
   fifth of all prompts is held out), one cache for every layer, one run per seed training TopK and MP-SAE
   (matching pursuit) at every layer on the same batches.
2. Faithfulness (``ioi_faithfulness``) on held-out prompts per template and architecture, nodes ranked by Marks et
   al.'s counterfactual attribution and by the mean-ablation estimate, error terms kept and ablated.
3. Makelov et al.'s counts (``ioi_supervised``) per layer: approximation, control, interpretability, for the
   attribute-mean dictionary and each SAE.
Every number is the mean ± half-range over the seeds (each seed: its own SAEs and its own held-out prompts).

Writes ``OUT/ioi_saes.md``, ``OUT/results.json`` and Plotly figures; runs and the cache go to ``--work`` (a
finished run is not retrained). Full run (the defaults): 44 min on 2 CPU cores (cache 1.5 min, training
4.5 min, evaluation 38 min; timings in the report). ``--quick``: the reduced CI version
(``tests/test_experiments_ioi_saes.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))
sys.path.insert(1, str(HERE))
from experiment_args import apply_preset, run_in_work  # noqa: E402

PRESETS = {
    "full": dict(
        seeds=[0, 1], layers=[6, 12, 18], templates=[0, 4], archs=["topk", "mp"], k=8, expansion=4,
        n_prompts=8000, tokens=131_072, epochs=3, rank_prompts=64, eval_prompts=128, fit_prompts=512,
        keep_n=[0, 10, 20, 50, 100, 200, 300, 500, 1000, 2000, -1], budgets=[1, 2, 4, 8, 16],
    ),
    "quick": dict(
        seeds=[0, 1], layers=[12], templates=[0], archs=["topk", "mp"], k=8, expansion=1,
        n_prompts=300, tokens=4096, epochs=1, rank_prompts=4, eval_prompts=8, fit_prompts=32,
        keep_n=[0, 10, -1], budgets=[1],
    ),
}  # fmt: skip


def behaviour(model, templates: list[int], n: int) -> list[dict]:
    """Does the model do IOI? Accuracy (logit(IO) > logit(S)) and mean logit difference, per template and order."""
    import torch
    from ioi_data import logit_diff, name_ids, sample, token_ids

    rows = []
    for t in templates:
        prompts = sample(t, n, seed=999)
        with torch.inference_mode():
            ld = logit_diff(model.bridge(token_ids(model, prompts)), *name_ids(model, prompts))
        for order in ("ABB", "BAB"):
            sel = torch.tensor([p.order == order for p in prompts])
            rows.append(
                {
                    "template": t,
                    "order": order,
                    "prompts": int(sel.sum()),
                    "accuracy": float((ld[sel] > 0).float().mean()),
                    "logit_diff": float(ld[sel].mean()),
                }
            )
    return rows


def evaluate_seed(a: argparse.Namespace, model, seed: int, saes: dict) -> dict[str, list[dict]]:
    """Faithfulness and Makelov et al.'s counts for one seed's SAEs, every template and layer."""
    from ioi_data import sample
    from ioi_faithfulness import faithfulness
    from ioi_supervised import evaluate_layer

    out: dict[str, list[dict]] = {"faithfulness": [], "approximation": [], "control": [], "interpretability": []}
    for t in a.templates:
        held = sample(t, a.rank_prompts + a.eval_prompts, seed=100 + seed)
        rank, ev = held[: a.rank_prompts], held[a.rank_prompts :]
        fit = sample(t, a.fit_prompts, seed=300 + seed, split="train")
        tag = {"seed": seed, "template": t}
        for arch in a.archs:
            rows = faithfulness(model, [saes[(arch, x)] for x in a.layers], rank, ev, a.keep_n)
            out["faithfulness"] += [{**tag, "arch": arch, **r} for r in rows]
        for layer in a.layers:
            found = evaluate_layer(model, layer, fit, ev, {x: saes[(x, layer)] for x in a.archs}, a.budgets, seed)
            for key, rows in found.items():
                out[key] += [{**tag, "layer": layer, **r} for r in rows]
        print(f"seed {seed} template {t}: evaluated", flush=True)
    return out


def run(a: argparse.Namespace) -> dict:
    """Train, evaluate and write the report."""
    from ioi_saes_report import write_outputs
    from ioi_task_saes import train_task_saes

    from sae_lab.models import load_model

    t0 = time.perf_counter()
    model = load_model("embedded", "cpu")
    result: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()}}
    result["behaviour"] = behaviour(model, a.templates, a.eval_prompts)
    timings: dict = {}
    for seed in a.seeds:
        saes, trained = train_task_saes(
            model, a.work, seed, a.layers, a.archs, a.n_prompts, a.tokens, a.epochs, a.k, a.expansion, a.templates
        )
        timings.update(trained)
        t1 = time.perf_counter()
        for key, rows in evaluate_seed(a, model, seed, saes).items():
            result.setdefault(key, []).extend(rows)
        timings[f"seed{seed}_eval_s"] = time.perf_counter() - t1
    result["timings"] = timings
    result["seconds"] = time.perf_counter() - t0
    write_outputs(result, a.out)
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", help="train.seed and prompt seed of each run (default 0 1)")
    ap.add_argument("--layers", type=int, nargs="+", help="residual stream after these blocks (default 6 12 18)")
    ap.add_argument("--templates", type=int, nargs="+", help="IOI templates (ioi_data.TEMPLATES; default 0 4)")
    ap.add_argument("--archs", nargs="+", choices=["topk", "mp"], help="SAE architectures (default topk mp)")
    ap.add_argument("--k", type=int, help="active latents (TopK) / pursuit steps (MP) (default 8)")
    ap.add_argument("--expansion", type=int, help="d_sae / d_in (default 4)")
    ap.add_argument("--n-prompts", type=int, help="IOI training sentences (default 8,000)")
    ap.add_argument("--tokens", type=int, help="cached training tokens (default 131,072)")
    ap.add_argument("--epochs", type=int, help="passes over the cached tokens (default 3)")
    ap.add_argument("--rank-prompts", type=int, help="held-out prompts ranking the nodes (default 64)")
    ap.add_argument("--eval-prompts", type=int, help="held-out prompts evaluated (default 128)")
    ap.add_argument("--fit-prompts", type=int, help="prompts fitting the supervised dictionary (default 512)")
    ap.add_argument("--keep-n", type=int, nargs="+", help="circuit sizes (-1: every feature)")
    ap.add_argument("--budgets", type=int, nargs="+", help="SAE edit budgets in features (default 1 2 4 8 16)")
    ap.add_argument("--work", type=Path, help="runs and cache (default: runs/experiments/ioi_saes; quick: temp)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ioi_saes")
    ap.add_argument("--quick", action="store_true", help="the reduced CI version")
    a = ap.parse_args(argv)
    apply_preset(a, PRESETS)
    return run_in_work(a, run, "runs/experiments/ioi_saes")


if __name__ == "__main__":
    main()
