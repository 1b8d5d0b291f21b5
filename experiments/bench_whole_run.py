"""A whole sae-lab training run (start-up included) against eai-sparsify, on the same cached activations.

    python experiments/bench_whole_run.py --cache CACHE_DIR [--epochs 3] [--d-sae 4608] [--k 32] [--batch 1024]
        [--short-steps 4] [--peer-envs /work/peer_envs] [--out result.json] [--baseline-checkout OTHER_CHECKOUT]

sae-lab: ``train_sweep`` of one TopK SAE on the cache (``ActivationCache(verify='full').source()``, the
trainer's own shuffled reader), ``epochs`` passes, default TrainConfig (lr: auto), one final checkpoint and
the saved SAE: the time from the call to its return, so building, b_dec initialisation, checkpointing and
saving are all inside it. Each run is a fresh process, ``--repeats`` times alternating with sparsify's (the
fastest of each is reported); its import and cache-opening times are reported apart. The fixed start-up
cost is measured twice: (a) timers around the trainer's fixed phases (build + optimiser, b_dec init,
checkpoint, SAE save); (b) a second run of ``--short-steps`` steps and the linear model T = F + steps * S
through both runs.

eai-sparsify: its runner (experiments/peers/train_sparsify.py, signum at its width-scaled lr, fused TopK
encoder) on the same rows exported from the cache, for the same number of epochs; its tokens/s is the
steady-state rate of its timed loop (no data loading, model or optimiser construction), as issue 12 quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.append(str(HERE.parent))  # after PYTHONPATH, so PYTHONPATH=/other/checkout measures that code


def _timed(module, name: str, phases: dict, key: str | None = None) -> None:
    """Wrap ``module.name`` (a module's function or a class's method) so its wall time accumulates into
    ``phases[key or name]``."""
    fn = getattr(module, name)
    key = key or name

    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            phases[key] = phases.get(key, 0.0) + time.perf_counter() - t

    setattr(module, name, wrapper)


def ours(args) -> dict:
    """One sae-lab run in this process (called in a fresh subprocess by the driver)."""
    t0 = time.perf_counter()
    import torch  # noqa: F401

    from sae_lab.activations.cache_reader import ActivationCache
    from sae_lab.saes import SAEConfig
    from sae_lab.training import TrainConfig, train_sweep
    from sae_lab.training import trainer as tr

    t1 = time.perf_counter()
    src = ActivationCache(args.cache, verify="full").source()
    t2 = time.perf_counter()
    steps = args.steps or (args.epochs * src.n_tokens) // args.batch
    cfg = TrainConfig(batch_size=args.batch, total_tokens=steps * args.batch, device="cpu", progress=False)
    sae = SAEConfig(architecture="topk", d_in=src.d_in, d_sae=args.d_sae, k=args.k, hook_name=src.hook_name)
    phases: dict[str, float] = {}
    for name in ("build_saes", "make_members", "init_b_dec", "_save_checkpoint", "_save_sae", "_calibrate"):
        owner, attr = (tr, name) if hasattr(tr, name) else (tr.Sweep, name[1:])  # a Sweep method since issue 19
        _timed(owner, attr, phases, key=name)
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    t3 = time.perf_counter()
    train_sweep([sae], src, cfg, run_dir)
    t4 = time.perf_counter()
    return {
        "steps": steps,
        "tokens": steps * args.batch,
        "import_s": t1 - t0,
        "open_cache_s": t2 - t1,
        "sweep_s": t4 - t3,
        "phases_s": phases,
        "lr": cfg.lr_for(args.d_sae) if hasattr(cfg, "lr_for") else cfg.lr,
    }  # main before lr: auto


def _run_ours(args, steps: int | None, run_dir: Path, checkout: str | None = None) -> dict:
    """One sae-lab run in a fresh process: this checkout's code, or ``checkout``'s (first on PYTHONPATH)."""
    cmd = [
        sys.executable,
        __file__,
        "--_ours",
        "--cache",
        args.cache,
        "--d-sae",
        str(args.d_sae),
        "--k",
        str(args.k),
        "--batch",
        str(args.batch),
        "--epochs",
        str(args.epochs),
        "--run-dir",
        str(run_dir),
    ]
    if steps:
        cmd += ["--steps", str(steps)]
    env = None
    if checkout:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [checkout, os.environ.get("PYTHONPATH")]))}
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    res = json.loads(out.strip().splitlines()[-1])
    res["process_s"] = time.perf_counter() - t
    return res


def _run_sparsify(args, work: Path) -> dict | None:
    python = Path(args.peer_envs) / "sparsify" / "bin" / "python"
    if not python.exists():
        print(f"no sparsify venv at {python.parent.parent} (see experiments/peers/README.md); skipped")
        return None
    import numpy as np

    from sae_lab.activations.cache_reader import ActivationCache

    cache = ActivationCache(args.cache, verify="none")
    src = cache.source()
    rows = [
        cache.acts(i, src.hook_name)[np.array(cache.keep(i, src.hook_name))].numpy() for i in range(len(cache.shards))
    ]
    data = np.concatenate(rows).astype(np.float32) * np.float32(src.norm_scale)
    np.save(work / "train.npy", data)
    np.save(work / "heldout.npy", data[-1024:])  # only to satisfy the runner; FVU is not the point here
    cmd = [
        str(python),
        str(HERE / "peers" / "train_sparsify.py"),
        "--train",
        str(work / "train.npy"),
        "--heldout",
        str(work / "heldout.npy"),
        "--d-sae",
        str(args.d_sae),
        "--k",
        str(args.k),
        "--batch",
        str(args.batch),
        "--epochs",
        str(args.epochs),
        "--out",
        str(work / "sparsify.json"),
    ]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=HERE / "peers")
    res = json.loads((work / "sparsify.json").read_text())
    res["process_s"] = time.perf_counter() - t
    return res


def report(full: dict, short: dict, peer: dict | None) -> list[str]:
    fixed_phases = sum(
        full["phases_s"].get(n, 0.0)
        for n in ("build_saes", "make_members", "init_b_dec", "_save_checkpoint", "_save_sae")
    )
    per_step = (full["sweep_s"] - short["sweep_s"]) / (full["steps"] - short["steps"])
    fixed_fit = full["sweep_s"] - full["steps"] * per_step
    tps = full["tokens"] / full["sweep_s"]
    lines = [
        f"sae-lab train_sweep: {full['tokens']:,} tokens in {full['sweep_s']:.2f} s = {tps:,.0f} tok/s, start-up "
        f"included (process {full['process_s']:.2f} s: import {full['import_s']:.2f} s, cache open+verify "
        f"{full['open_cache_s']:.2f} s)",
        "  fixed phases (timed): "
        + ", ".join(f"{k} {v:.3f} s" for k, v in full["phases_s"].items())
        + f"; sum {fixed_phases:.2f} s = {100 * fixed_phases / full['sweep_s']:.1f}% of the run",
        f"  fixed cost from T = F + steps*S over {short['steps']} and {full['steps']} steps: F = {fixed_fit:.2f} s "
        f"({100 * fixed_fit / full['sweep_s']:.1f}% of the run), S = {1000 * per_step:.1f} ms/step "
        f"({full['tokens'] / full['steps'] / per_step:,.0f} tok/s steady)",
    ]
    if peer:
        lines += [
            f"eai-sparsify {peer['version']}: {peer['n_train']:,} tokens, timed loop {peer['tokens_per_s']:,.0f} tok/s"
            f" (process {peer['process_s']:.1f} s incl. import, data load and held-out eval)",
            f"ratio, sae-lab whole run / sparsify steady state: {tps / peer['tokens_per_s']:.2f}x",
        ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", required=True)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--short-steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2, help="runs of each; the fastest of each is reported")
    p.add_argument("--steps", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--run-dir", default="out/bench_whole_run/run", help=argparse.SUPPRESS)
    p.add_argument("--_ours", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-sparsify", action="store_true")
    p.add_argument("--peer-envs", default="/work/peer_envs")
    p.add_argument("--work", default="out/bench_whole_run")
    p.add_argument("--out", default=None, help="write the raw numbers and the report as JSON here")
    p.add_argument(
        "--baseline-checkout",
        default=None,
        help="also time the whole run of another checkout of "
        "sae-lab (e.g. a git worktree of an older commit), alternating with this one",
    )
    args = p.parse_args()
    if args._ours:
        print(json.dumps(ours(args)))
        return
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    fulls, shorts, peers, bases = [], [], [], []
    for _ in range(args.repeats):  # alternated, so that load from other processes hits all alike
        fulls.append(_run_ours(args, None, work / "run_full"))
        shorts.append(_run_ours(args, args.short_steps, work / "run_short"))
        if args.baseline_checkout:
            bases.append(_run_ours(args, None, work / "run_baseline", args.baseline_checkout))
        if not args.no_sparsify:
            peers.append(_run_sparsify(args, work))
    full = min(fulls, key=lambda r: r["sweep_s"])  # the least disturbed run of each
    short = min(shorts, key=lambda r: r["sweep_s"])
    peer = max((p for p in peers if p), key=lambda r: r["tokens_per_s"], default=None)
    lines = report(full, short, peer)
    if bases:
        base = min(bases, key=lambda r: r["sweep_s"])
        speedup = base["sweep_s"] / full["sweep_s"]
        lines.append(
            f"baseline checkout {args.baseline_checkout}: {base['tokens'] / base['sweep_s']:,.0f} tok/s whole "
            f"run (fastest of {len(bases)}); this checkout / baseline: {speedup:.3f}x"
        )
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            json.dumps(
                {
                    "argv": sys.argv[1:],
                    "ours": full,
                    "ours_short": short,
                    "sparsify": peer,
                    "all_runs": {"ours": fulls, "ours_short": shorts, "sparsify": peers, "baseline": bases},
                    "report": lines,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
