"""`lr: auto` against a small lr sweep, and against eai-sparsify at its own default, on identical activations.

    python experiments/lr_auto.py --train train.npy --heldout heldout.npy --d-sae 2304 9216 \\
        [--k 32] [--batch 1024] [--epochs 3] [--factors 0.25 0.5 1 2 4] [--no-sparsify] \\
        [--out experiments/results/lr_auto/NAME.json] [--markdown snippet.md]

For every width, sae-lab's TopK is trained at ``factor x auto_lr(d_sae)`` for each factor (factor 1 is the
default), with the trainer's step and schedule (``bench_train.run_sae_lab``: the default TrainConfig, only lr
changes), then eai-sparsify's TopK at its default (signum, its width-scaled lr) through its runner in the
``sparsify`` venv (``experiments/peers/README.md``). Every run sees the same rows in the same order
(``_common.permute_rows``) and is scored on the same held-out rows with each library's encode/decode.
The marks (issue 12): FVU(auto) <= 1.02 x the sweep's best FVU, and FVU(auto) <= sparsify's FVU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(1, str(HERE.parent))

import bench_train  # noqa: E402  (the side-by-side runners; imports _common)
from _common import load_rows, permute_rows  # noqa: E402

from sae_lab.training.config import auto_lr  # noqa: E402


def _sparsify(args, d_sae: int, out_dir: Path) -> dict | None:
    python = Path(args.peer_envs) / "sparsify" / "bin" / "python"
    if not python.exists():
        print(f"[sparsify] no venv at {python.parent.parent}; skipped (see experiments/peers/README.md)")
        return None
    ns = argparse.Namespace(
        train=args.train,
        heldout=args.heldout,
        d_sae=d_sae,
        k=args.k,
        batch=args.batch,
        epochs=args.epochs,
        seed=args.seed,
        threads=None,
    )
    cmd = [str(python), str(HERE / "peers" / "train_sparsify.py"), *bench_train._common_cli(ns, None, None)]
    name = f"eai-sparsify-{d_sae}"
    return bench_train._run(name, cmd, out_dir / f"{name}.json", out_dir / f"{name}.log", None, HERE / "peers")


def sweep_width(args, train, heldout, d_sae: int, out_dir: Path) -> dict:
    """The sweep, the default and sparsify at one width; returns the rows and the verdicts."""
    rows = []
    for f in args.factors:
        lr = None if f == 1 else f * auto_lr(d_sae)  # None: the TrainConfig default, i.e. lr: auto
        r = bench_train.run_sae_lab(
            "topk", train, heldout, d_sae=d_sae, k=args.k, batch=args.batch, epochs=args.epochs, lr=lr, seed=args.seed
        )
        rows.append(
            {
                "factor": f,
                "lr": r["lr"],
                "lr_setting": r["lr_setting"],
                "heldout_fvu": r["heldout_fvu"],
                "dead_frac": r["dead_frac"],
                "tokens_per_s": r["tokens_per_s"],
            }
        )
        print(
            f"[{d_sae}] lr {r['lr']:.3g} ({r['lr_setting']}): FVU {r['heldout_fvu']:.4f}, "
            f"dead {100 * r['dead_frac']:.1f}%",
            flush=True,
        )
    auto = next(r for r in rows if r["factor"] == 1)
    best = min(rows, key=lambda r: r["heldout_fvu"])
    peer = None if args.no_sparsify else _sparsify(args, d_sae, out_dir)
    return {
        "d_sae": d_sae,
        "k": args.k,
        "rows": rows,
        "auto_lr": auto["lr"],
        "auto_fvu": auto["heldout_fvu"],
        "best_lr": best["lr"],
        "best_fvu": best["heldout_fvu"],
        "auto_over_best": auto["heldout_fvu"] / best["heldout_fvu"],
        "sparsify_fvu": peer and peer["heldout_fvu"],
        "sparsify_lr": peer and peer.get("lr"),
        "sparsify_tokens_per_s": peer and peer["tokens_per_s"],
        "sparsify_dead_frac": peer and peer["dead_frac"],
    }


def markdown(args, n_train: int, results: list[dict]) -> str:
    out = [
        f"Data: {n_train:,} training rows x {args.epochs} epoch(s), {Path(args.heldout).name} held out; "
        f"k {args.k}, batch {args.batch}, seed {args.seed}.",
        "",
        "| d_sae | lr | held-out FVU | dead |",
        "|---:|---|---:|---:|",
    ]
    for res in results:
        for r in res["rows"]:
            tag = " **(auto)**" if r["factor"] == 1 else ""
            out.append(
                f"| {res['d_sae']} | {r['lr']:.3g}{tag} | {r['heldout_fvu']:.4f} | {100 * r['dead_frac']:.1f}% |"
            )
        if res["sparsify_fvu"] is not None:
            dead = res.get("sparsify_dead_frac")
            out.append(
                f"| {res['d_sae']} | eai-sparsify default ({res['sparsify_lr']:.3g}, signum) | "
                f"{res['sparsify_fvu']:.4f} | {'' if dead is None else f'{100 * dead:.1f}%'} |"
            )
    out.append("")
    for res in results:
        verdict = "met" if res["auto_over_best"] <= 1.02 else "NOT met"
        line = (
            f"- {res['d_sae']} latents: auto lr {res['auto_lr']:.3g} -> FVU {res['auto_fvu']:.4f}, best of the "
            f"sweep {res['best_fvu']:.4f} at lr {res['best_lr']:.3g}: {res['auto_over_best']:.4f}x (<= 1.02: "
            f"{verdict})"
        )
        if res["sparsify_fvu"] is not None:
            ok = "yes" if res["auto_fvu"] <= res["sparsify_fvu"] else "NO"
            line += f"; eai-sparsify {res['sparsify_fvu']:.4f} (auto matches or beats it: {ok})"
        out.append(line)
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--d-sae", type=int, nargs="+", default=[2304, 9216])
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--factors",
        type=float,
        nargs="+",
        default=[0.25, 0.5, 1.0, 2.0, 4.0],
        help="the sweep's lrs as multiples of auto_lr(d_sae); 1 is the default itself",
    )
    p.add_argument("--no-sparsify", action="store_true")
    p.add_argument("--peer-envs", default="/work/peer_envs")
    p.add_argument("--out", default="out/lr_auto/result.json")
    p.add_argument("--markdown", default=None)
    args = p.parse_args()
    if 1.0 not in args.factors:
        p.error("--factors must include 1 (the default)")
    train = permute_rows(load_rows(args.train), args.seed)
    heldout = load_rows(args.heldout)
    out = Path(args.out).resolve()  # the peer runner works in experiments/peers
    out.parent.mkdir(parents=True, exist_ok=True)
    results = [sweep_width(args, train, heldout, d, out.parent) for d in args.d_sae]
    out.write_text(json.dumps({"args": vars(args), "n_train": int(train.shape[0]), "results": results}, indent=2))
    text = markdown(args, int(train.shape[0]), results)
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text)


if __name__ == "__main__":
    main()
