"""Check `sae-lab eval`'s SAELens-definition metrics (``saelens_*``) against SAELens's own eval code.

    python experiments/check_saelens_eval.py RUN_DIR [--n-tokens 2048] [--peer-envs /work/peer_envs] [--work DIR]
        [--markdown]

Needs the `saelens` venv of experiments/peers/README.md (SAELens needs transformer-lens<4). Steps:
1. sae-lab takes the held-out batches of the run's ``eval:`` section (``--n-tokens`` of them) and evaluates the
   run's SAEs on them (``evaluate_targets``: both definitions), and writes the token batches to WORK/tokens.npy.
2. In the SAELens venv, ``peers/saelens_eval.py`` builds a TransformerLens 3 ``HookedTransformer`` from the same
   Hugging Face Llama weights (the embedded model's safetensors store), loads each SAE directory with
   ``sae_lens.SAE.load_from_disk`` and runs ``sae_lens.evals.run_evals`` (CE, KL, variance and sparsity metrics) on
   the same token batches, in the same batches, through an activation-store stand-in that serves them.
3. Prints, per SAE and metric, sae-lab's ``saelens_*`` value, SAELens's value and the difference, and exits 1 if
   any differs in its first 3 significant digits (``agree``: |Δ| > 5e-4 x |SAELens's value|).
The embedded model only (its store is the weights both sides load).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from sae_lab.evaluation import EvalConfig
from sae_lab.evaluation import inputs as I
from sae_lab.evaluation.evaluate import evaluate_targets
from sae_lab.models import embedded_store_dir
from sae_lab.rundir import RunDir

HERE = Path(__file__).resolve().parent
# sae-lab's name -> SAELens's run_evals name
PAIRS = {
    "saelens_ce_loss_score": "ce_loss_score",
    "saelens_ce_loss_without_sae": "ce_loss_without_sae",
    "saelens_ce_loss_with_sae": "ce_loss_with_sae",
    "saelens_ce_loss_with_ablation": "ce_loss_with_ablation",
    "saelens_kl_div_score": "kl_div_score",
    "saelens_kl_div_with_sae": "kl_div_with_sae",
    "saelens_kl_div_with_ablation": "kl_div_with_ablation",
    "saelens_explained_variance": "explained_variance",
    "saelens_l0": "l0",
    "saelens_mse": "mse",
    "saelens_cossim": "cossim",
}


def agree(ours: float, theirs: float) -> bool:
    """Equal to 3 significant digits: |Δ| <= 5e-4 x |SAELens's value| (1e-6 absolute for values near 0)."""
    return math.isfinite(ours) and math.isfinite(theirs) and abs(ours - theirs) <= max(5e-4 * abs(theirs), 1e-6)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--n-tokens", type=int, default=2048)
    ap.add_argument("--peer-envs", default="/work/peer_envs")
    ap.add_argument("--work", default=None, help="working directory (default: a fresh temporary one)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = ap.parse_args()
    python = Path(args.peer_envs) / "saelens" / "bin" / "python"
    if not python.exists():
        sys.exit(f"no SAELens venv at {python}; create it as experiments/peers/README.md says")
    run = RunDir(args.run_dir)
    run_cfg = run.read_config()
    if ((run_cfg.get("model") or {}).get("name") or "embedded") != "embedded":
        sys.exit("this check loads the embedded model's weights on both sides; the run uses another model")
    cfg = EvalConfig.model_validate({**(run_cfg.get("eval") or {}), "n_tokens": args.n_tokens})
    work = Path(args.work or tempfile.mkdtemp(prefix="saelens_eval_"))
    work.mkdir(parents=True, exist_ok=True)
    model = I.model_for(run_cfg, None)
    targets = I.run_targets(run)
    tokens = np.concatenate([t for _, t in I.iter_batches(cfg, model.tokenizer)])
    np.save(work / "tokens.npy", tokens)
    ours = evaluate_targets(targets, model, cfg, I.outlier_multiple(cfg, run_cfg))
    peer = [
        str(python),
        str(HERE / "peers" / "saelens_eval.py"),
        "--model-dir",
        str(embedded_store_dir()),
        "--tokens",
        str(work / "tokens.npy"),
        "--batch-size",
        str(cfg.batch_size),
        "--out",
        str(work / "saelens.json"),
    ]
    for t in targets:
        peer += ["--sae", f"{t.name}={t.out_dir}"]
    subprocess.run(peer, check=True)
    theirs = json.loads((work / "saelens.json").read_text())
    rows = []
    for t in targets:
        m, s = ours[t.name]["metrics"], theirs["saes"][t.name]
        for ours_key, their_key in PAIRS.items():
            rows.append((t.name, ours_key, m[ours_key], s[their_key], agree(m[ours_key], s[their_key])))
    (work / "comparison.json").write_text(
        json.dumps({"sae_lab": {n: r["metrics"] for n, r in ours.items()}, "saelens": theirs, "rows": rows}, indent=1)
    )
    print(
        f"SAELens {theirs['sae_lens_version']} (transformer-lens {theirs['transformer_lens_version']}); "
        f"{tokens.shape[0]} contexts x {tokens.shape[1]} tokens, batches of {cfg.batch_size}; "
        f"SAELens ignores token ids {theirs['ignored_token_ids']}; work dir {work}"
    )
    if args.markdown:
        print("| SAE | metric (sae-lab name) | sae-lab | SAELens | difference | 3 digits |")
        print("|---|---|---:|---:|---:|---|")
    for name, key, a, b, ok in rows:
        cells = (name, key, f"{a:.6g}", f"{b:.6g}", f"{a - b:.1e}", "yes" if ok else "NO")
        print("| " + " | ".join(cells) + " |" if args.markdown else "  ".join(f"{c:>28}" for c in cells))
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
