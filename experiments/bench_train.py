"""Side-by-side CPU training benchmark: sae-lab's TopK and MP-SAE against the peer libraries.

Run it from the main environment (the one where sae_lab is installed):

    python experiments/bench_train.py --train train.npy --heldout heldout.npy \\
        [--peer-envs /work/peer_envs] [--markdown bench.md]

Each peer trains in its own virtual environment (``<peer-envs>/{sparsify,saelens,overcomplete}``; see
``experiments/peers/README.md`` for how to create them) through its runner in ``experiments/peers/``, a
fresh subprocess per run, one run at a time. A peer whose venv is missing is skipped with a note.
sae-lab's runs go through :func:`run_sae_lab`, also in a fresh subprocess (of this interpreter).

Every run sees the same float32 activations in the same order (one ``torch.randperm`` under ``--seed``),
in whole batches prepared before the clock starts; tokens/s covers forward + backward + optimiser step of
one epoch; held-out FVU = sum||x - x_hat||^2 / sum||x - mean(x)||^2 and the dead fraction (latents never
active on the held-out set) come from each library's own encode/decode (``experiments/peers/_common.py``).
Issue 3's targets: TopK >= 1.0x the fastest peer's tokens/s at equal or better FVU; MP-SAE >= 10x
overcomplete's MpSAE; our MP within 3x of our TopK's step time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
sys.path.insert(0, str(PEERS_DIR))  # _common: data loading and metrics shared with the peer runners
if str(HERE.parent) not in sys.path:  # the repo root, so sae_lab imports from a checkout too
    sys.path.insert(1, str(HERE.parent))

# name -> (venv folder under --peer-envs, runner script, architecture)
PEERS = {
    "eai-sparsify": ("sparsify", "train_sparsify.py", "topk"),
    "sae-lens": ("saelens", "train_saelens.py", "topk"),
    "overcomplete-topk": ("overcomplete", "train_overcomplete_topk.py", "topk"),
    "overcomplete-mp": ("overcomplete", "train_overcomplete_mp.py", "mp"),
}
OURS = {"topk": "sae-lab-topk", "mp": "sae-lab-mp"}


# ---------------------------------------------------------------------------------------------------
# sae-lab
# ---------------------------------------------------------------------------------------------------
class SaeLabNotReady(RuntimeError):
    """sae_lab's training API is missing or changed; fill in run_sae_lab."""


def run_sae_lab(
    arch: str,
    train,
    heldout,
    *,
    d_sae: int,
    k: int,
    batch: int,
    epochs: int = 1,
    lr: float | None = None,
    seed: int = 0,
    eval_chunk: int = 4096,
    dtype: str | None = None,
) -> dict:
    """Train sae-lab's ``arch`` ('topk' or 'mp') on ``train`` ([n, d_in] float32 tensor, already in the
    benchmark's row order) for ``epochs`` and evaluate on ``heldout``.

    Returns {library, version, arch, tokens_per_s, heldout_fvu, dead_frac, n_train, ...}. The timed
    region matches the peers': b_dec initialisation plus, per batch, ``sae_lab.training.train_step``
    (training_forward, loss, backward, remove_parallel_grads, clip, Adam, normalize_decoder, scheduler),
    with the optimiser and schedule the trainer builds from a default ``TrainConfig``. Model and
    optimiser construction are outside it. Raises SaeLabNotReady if the API is not there yet.
    """
    import torch
    from _common import active_from_dense, heldout_metrics, make_batches

    try:
        import sae_lab
        from sae_lab.saes import build_sae
        from sae_lab.training import TrainConfig, train_step
        from sae_lab.training.schedule import make_scheduler
        from sae_lab.training.step import make_optimizer
    except Exception as e:  # noqa: BLE001 - any import failure means "not ready"
        raise SaeLabNotReady(f"sae_lab training API not importable: {type(e).__name__}: {e}") from e

    architecture = {"topk": "topk", "mp": "matching_pursuit"}[arch]
    batches = make_batches(train, batch, epochs)
    n_train = len(batches) * batch
    overrides = dict(batch_size=batch, total_tokens=n_train, seed=seed, device="cpu", progress=False)
    if lr is not None:
        overrides["lr"] = lr
    if dtype is not None:
        overrides["dtype"] = dtype
    cfg = TrainConfig(**overrides)

    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            sae = build_sae({"architecture": architecture, "d_in": int(train.shape[1]), "d_sae": d_sae, "k": k})
    except Exception as e:  # noqa: BLE001
        raise SaeLabNotReady(f"cannot build sae_lab '{architecture}' SAE: {type(e).__name__}: {e}") from e
    lr = cfg.lr_for(d_sae)
    opt = make_optimizer(sae, lr, cfg.betas, cfg.eps)  # the trainer's own optimiser (fused Adam on CPU)
    sched = make_scheduler(opt, cfg)
    sample = train[: cfg.b_dec_init_tokens]
    sae.train()

    t0 = time.perf_counter()
    with torch.no_grad():
        sae.init_b_dec(sample, method=cfg.b_dec_init)
    for x in batches:
        train_step(
            sae, opt, sched, x, recon_loss=cfg.recon_loss, grad_clip=cfg.grad_clip, compute_dtype=cfg.compute_dtype()
        )
    seconds = time.perf_counter() - t0

    sae.eval()

    def recon_and_active(x):
        z = sae.encode(x)
        return sae.decode(z), active_from_dense(z)

    metrics = heldout_metrics(heldout, recon_and_active, d_sae, eval_chunk)
    try:
        from importlib.metadata import version

        ver = version("sae-lab")
    except Exception:  # noqa: BLE001
        ver = getattr(sae_lab, "__version__", "dev")
    return {
        "library": "sae-lab",
        "version": ver,
        "arch": arch,
        "tokens_per_s": n_train / seconds,
        "train_seconds": seconds,
        "n_train": n_train,
        "lr": lr,
        "lr_setting": cfg.lr,
        "dtype": cfg.dtype,
        "optimizer": f"Adam{tuple(cfg.betas)}, warm-up {cfg.warmup_fraction:g}, {cfg.decay} decay, "
        f"clip {cfg.grad_clip}, b_dec {cfg.b_dec_init} [sae_lab.training.train_step]",
        **metrics,
    }


def _ours_main(argv: list[str]) -> None:
    """Subprocess entry: ``bench_train.py --_run-ours ARCH <the peer runners' CLI>``."""
    arch = argv[argv.index("--_run-ours") + 1]
    i = argv.index("--_run-ours")
    sys.argv = [sys.argv[0]] + argv[:i] + argv[i + 2 :]
    from _common import load_data, parse_args, write_result

    args = parse_args(f"sae-lab {arch}", "sae_lab TrainConfig default")
    train, heldout = load_data(args)
    try:
        result = run_sae_lab(
            arch,
            train,
            heldout,
            d_sae=args.d_sae,
            k=args.k,
            batch=args.batch,
            epochs=args.epochs,
            lr=args.lr,
            seed=args.seed,
            eval_chunk=args.eval_chunk,
        )
    except SaeLabNotReady as e:
        print(f"SAE_LAB_NOT_READY: {e}", file=sys.stderr)
        sys.exit(3)
    write_result(args, result)


# ---------------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------------
def _common_cli(args, lr: float | None, max_rows: int | None) -> list[str]:
    cli = [
        "--train",
        str(Path(args.train).resolve()),
        "--heldout",
        str(Path(args.heldout).resolve()),
        "--d-sae",
        str(args.d_sae),
        "--k",
        str(args.k),
        "--batch",
        str(args.batch),
        "--epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
    ]
    if lr is not None:
        cli += ["--lr", repr(lr)]
    if max_rows is not None:
        cli += ["--max-rows", str(max_rows)]
    if args.threads:
        cli += ["--threads", str(args.threads)]
    return cli


def _run(name: str, cmd: list[str], out_json: Path, log: Path, timeout: float | None, cwd: Path) -> dict | None:
    print(f"[{name}] running ... (log: {log})", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        try:
            proc = subprocess.run(
                cmd + ["--out", str(out_json)], stdout=f, stderr=subprocess.STDOUT, cwd=cwd, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            print(f"[{name}] TIMED OUT after {timeout:.0f} s; skipped")
            return None
    wall = time.perf_counter() - t0
    if proc.returncode == 3 and "SAE_LAB_NOT_READY" in log.read_text():
        note = [ln for ln in log.read_text().splitlines() if "SAE_LAB_NOT_READY" in ln][-1]
        print(f"[{name}] skipped: {note.split('SAE_LAB_NOT_READY: ', 1)[-1]}")
        print(f"[{name}]   (fill in run_sae_lab() in {Path(__file__).name} once the API settles)")
        return None
    if proc.returncode != 0 or not out_json.exists():
        tail = "\n".join(log.read_text().splitlines()[-15:])
        print(f"[{name}] FAILED (exit {proc.returncode}); last lines of {log}:\n{tail}")
        return None
    res = json.loads(out_json.read_text())
    res["run_name"] = name
    print(
        f"[{name}] {res['tokens_per_s']:.0f} tokens/s, held-out FVU {res['heldout_fvu']:.4f}, "
        f"dead {100 * res['dead_frac']:.1f}% ({wall:.0f} s wall)",
        flush=True,
    )
    return res


def _ratio_lines(results: dict[str, dict]) -> list[str]:
    lines = []
    ours_topk, ours_mp = results.get("sae-lab-topk"), results.get("sae-lab-mp")
    peer_topk = {n: r for n, r in results.items() if n in PEERS and r["arch"] == "topk"}
    if ours_topk and peer_topk:
        fastest = max(peer_topk.values(), key=lambda r: r["tokens_per_s"])
        for n, r in sorted(peer_topk.items()):
            lines.append(
                f"- TopK vs {n}: {ours_topk['tokens_per_s'] / r['tokens_per_s']:.2f}x tokens/s; "
                f"held-out FVU {ours_topk['heldout_fvu']:.4f} vs {r['heldout_fvu']:.4f}"
            )
        ok_speed = ours_topk["tokens_per_s"] >= fastest["tokens_per_s"]
        ok_fvu = ours_topk["heldout_fvu"] <= fastest["heldout_fvu"]
        lines.append(
            f"- TopK vs fastest peer ({fastest['run_name']}): "
            f"{ours_topk['tokens_per_s'] / fastest['tokens_per_s']:.2f}x (target >= 1.0x: "
            f"{'met' if ok_speed else 'NOT met'}); FVU equal or better: {'yes' if ok_fvu else 'NO'}"
        )
    peer_mp = results.get("overcomplete-mp")
    if ours_mp and peer_mp:
        r = ours_mp["tokens_per_s"] / peer_mp["tokens_per_s"]
        lines.append(
            f"- MP-SAE vs overcomplete MpSAE: {r:.1f}x tokens/s (target >= 10x: "
            f"{'met' if r >= 10 else 'NOT met'}); held-out FVU {ours_mp['heldout_fvu']:.4f} vs "
            f"{peer_mp['heldout_fvu']:.4f}"
        )
    if ours_mp and ours_topk:
        r = ours_topk["tokens_per_s"] / ours_mp["tokens_per_s"]
        lines.append(f"- our MP step time / our TopK step time: {r:.2f}x (aim <= 3x: {'met' if r <= 3 else 'NOT met'})")
    return lines


def _table(results: dict[str, dict]) -> list[str]:
    rows = [
        "| run | library | version | arch | train tokens | tokens/s | held-out FVU | dead latents |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        rows.append(
            f"| {name} | {r['library']} | {r['version']} | {r['arch']} | {r['n_train']:,} | "
            f"{r['tokens_per_s']:,.0f} | {r['heldout_fvu']:.4f} | {100 * r['dead_frac']:.1f}% |"
        )
    return rows


def _markdown(args, results: dict[str, dict], notes: list[str]) -> str:
    import numpy as np
    import torch

    tr = np.load(args.train, mmap_mode="r")
    ho = np.load(args.heldout, mmap_mode="r")
    out = [
        f"### Training throughput, side by side ({time.strftime('%Y-%m-%d')})",
        "",
        f"Data: `{Path(args.train).name}` {tuple(tr.shape)} train, `{Path(args.heldout).name}` {tuple(ho.shape)} "
        f"held-out, float32. d_sae {args.d_sae}, k {args.k}, batch {args.batch}, {args.epochs} epoch(s), "
        f"seed {args.seed}" + (f", MP runs capped at {args.mp_max_rows:,} rows" if args.mp_max_rows else "") + ".",
        f"Machine: {os.cpu_count()} CPU cores, torch {torch.__version__}, Python {platform.python_version()}; "
        "one run at a time, each in a fresh process. Command: "
        f"`{shlex.join(['python', 'experiments/bench_train.py', *sys.argv[1:]])}`.",
        "",
        *_table(results),
        "",
        "Ratios (ours / peer):",
        "",
        *(_ratio_lines(results) or ["- (need both our runs and the peers' to compute ratios)"]),
    ]
    if notes:
        out += ["", "Notes:", "", *[f"- {n}" for n in notes]]
    settings = [f"- {n}: {r.get('optimizer', '?')}, lr {r.get('lr', '?')}" for n, r in results.items()]
    out += ["", "Training recipe per run (each library's own trainer/optimiser and defaults):", "", *settings, ""]
    return "\n".join(out)


def main() -> None:
    if "--_run-ours" in sys.argv:
        _ours_main(sys.argv[1:])
        return
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--train", required=True, help="float32 .npy [n, d_in]")
    p.add_argument("--heldout", required=True, help="float32 .npy [m, d_in]")
    p.add_argument("--peer-envs", default="/work/peer_envs", help="folder holding the peers' venvs")
    p.add_argument("--peers", nargs="*", default=list(PEERS), choices=list(PEERS), help="peer runs to do")
    p.add_argument("--ours", nargs="*", default=list(OURS), choices=list(OURS), help="sae-lab runs to do")
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads in every run (default: torch's)")
    p.add_argument(
        "--peer-lr",
        action="append",
        default=[],
        metavar="RUN=LR",
        help="override a run's learning rate, e.g. sae-lens=1e-3 or sae-lab-topk=4e-4 (repeatable)",
    )
    p.add_argument(
        "--mp-max-rows",
        type=int,
        default=None,
        help="train the MP runs (ours and overcomplete's) on only the first N rows; overcomplete's "
        "MpSAE runs at ~100 tokens/s here, so a full 300k-token epoch takes ~45 min",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds before a run is abandoned")
    p.add_argument("--results-dir", default="out/bench_train", help="per-run JSON and logs go here")
    p.add_argument("--markdown", default=None, help="write a BENCHMARKS.md snippet to this file")
    args = p.parse_args()

    lrs = {}
    for item in args.peer_lr:
        name, _, value = item.partition("=")
        if name not in PEERS and name not in OURS.values():
            p.error(f"--peer-lr: unknown run '{name}'; runs: {', '.join([*PEERS, *OURS.values()])}")
        lrs[name] = float(value)
    results_dir = Path(args.results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    peer_envs = Path(args.peer_envs)
    results: dict[str, dict] = {}
    notes: list[str] = []

    for name in args.peers:
        env, script, arch = PEERS[name]
        python = peer_envs / env / "bin" / "python"
        if not python.exists():
            msg = f"skipped, no venv at {peer_envs / env} (see experiments/peers/README.md)"
            print(f"[{name}] {msg}")
            notes.append(f"{name}: {msg}")
            continue
        cmd = [
            str(python),
            str(PEERS_DIR / script),
            *_common_cli(args, lrs.get(name), args.mp_max_rows if arch == "mp" else None),
        ]
        res = _run(name, cmd, results_dir / f"{name}.json", results_dir / f"{name}.log", args.timeout, PEERS_DIR)
        if res:
            results[name] = res
        else:
            notes.append(f"{name}: no result (see {results_dir / (name + '.log')})")

    for arch in args.ours:
        name = OURS[arch]
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--_run-ours",
            arch,
            *_common_cli(args, lrs.get(name), args.mp_max_rows if arch == "mp" else None),
        ]
        res = _run(name, cmd, results_dir / f"{name}.json", results_dir / f"{name}.log", args.timeout, HERE.parent)
        if res:
            results[name] = res
        else:
            notes.append(f"{name}: no result (see {results_dir / (name + '.log')})")

    print()
    print("\n".join(_table(results)))
    print()
    ratios = _ratio_lines(results)
    print("\n".join(ratios) if ratios else "(no ours/peer pairs to compare)")
    (results_dir / "summary.json").write_text(json.dumps({"results": results, "notes": notes}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(_markdown(args, results, notes))
        print(f"\nmarkdown snippet written to {args.markdown}")


if __name__ == "__main__":
    main()
