"""Data-parallel training throughput: 1 process against 2 torchrun ranks (gloo) on the same data, with the
communication each step costs.

    python experiments/bench_ddp.py [--steps 12] [--batch 1024] [--d-in 576] [--widths 2304 4608] [--k 32]
                                    [--archs topk mutual_choice feature_choice]

For each width and architecture, the real training step (sae_lab.training.step.train_step, with the data-parallel
reductions of sae_lab.distributed / training.ddp switched on exactly as the trainer does) runs on the same
global batches (a fixed random activation matrix, seed 0): first in this process (world 1, all threads), then
under `torchrun --nproc_per_node 2` (each rank half of every global batch, 1 thread each: the 2 cores split
between ranks). Every collective is wrapped to record, per step and per rank, its payload bytes (the tensor each
rank contributes) and wall time (the gradient all-reduce is timed as a whole, its per-parameter calls being
asynchronous). Prints tokens/s for 1 and 2 processes, their ratio, and the communication volume/time per step.
On one 2-core machine the ratio says little (the ranks share the cores and memory bandwidth); the volume is what
decides scaling on GPUs: a ring all-reduce moves 2·(N-1)/N times the gradient bytes through each rank's link.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import torch
import torch.distributed as dist

from sae_lab.distributed import sharded_batches, world
from sae_lab.saes import SAEConfig, build_sae
from sae_lab.training import ddp
from sae_lab.training.step import make_optimizer, train_step

COMM = defaultdict(lambda: [0, 0, 0.0])  # op -> [calls, payload bytes, seconds]


def _instrument() -> None:
    """Wrap the collectives sae-lab uses so each call records its payload and (synchronous) wall time."""

    def wrap(name, nbytes):
        orig = getattr(dist, name)

        def call(*args, **kw):
            t0 = time.perf_counter()
            out = orig(*args, **kw)
            rec = COMM[name]
            rec[0] += 1
            rec[1] += nbytes(*args)
            if not kw.get("async_op"):
                rec[2] += time.perf_counter() - t0
            return out

        setattr(dist, name, call)

    wrap("all_reduce", lambda t, *a: t.numel() * t.element_size())
    wrap("all_gather", lambda parts, t, *a: t.numel() * t.element_size())
    orig_grads = ddp.all_reduce_grads

    def timed_grads(sae):
        t0 = time.perf_counter()
        orig_grads(sae)
        COMM["grad all_reduce (whole)"][2] += time.perf_counter() - t0

    ddp.all_reduce_grads = timed_grads


def data(n: int, d_in: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d_in, generator=g) + 2.0 * torch.randn(d_in, generator=g)


def run(arch: str, width: int, args) -> dict:
    """Steady-state step time of ``arch`` on this rank's part of the same global batches."""
    rank, n = world()
    cfg = dict(architecture=arch, d_in=args.d_in, d_sae=width, k=args.k, hook_name="x", name=arch)
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(**cfg))
    x_all = data(args.batch * 4, args.d_in)
    sae.init_b_dec(x_all[:1024], "mean")
    opt = make_optimizer(sae, 1e-4, (0.9, 0.999), 1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    s = args.batch // n
    batches = [x_all[i * args.batch : (i + 1) * args.batch][rank * s : (rank + 1) * s].contiguous() for i in range(4)]
    hook = ddp.grad_hook(None)
    times = []
    with sharded_batches():
        for i in range(args.warmup + args.steps):
            if i == args.warmup:
                COMM.clear()
            if n > 1:
                dist.barrier()
            t0 = time.perf_counter()
            train_step(sae, opt, sched, batches[i % 4], grad_hook=hook)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    step = sorted(times)[len(times) // 2]
    comm = {
        op: {"calls": c / args.steps, "bytes": b / args.steps, "ms": 1e3 * t / args.steps}
        for op, (c, b, t) in COMM.items()
    }
    return {
        "arch": arch,
        "d_sae": width,
        "world": n,
        "step_ms": 1e3 * step,
        "tokens_per_s": args.batch / step,
        "comm": comm,
    }


def worker(args) -> None:
    _instrument()
    torch.set_num_threads(1)
    out = [run(a, w, args) for w in args.widths for a in args.archs]
    if world()[0] == 0:
        with open(args.out, "w") as f:
            json.dump(out, f)
    dist.barrier()


def report(one: list[dict], two: list[dict]) -> None:
    print(f"{'arch':>15} {'d_sae':>6} {'1 proc tok/s':>13} {'2 ranks tok/s':>14} {'ratio':>6}  per-step comm per rank")
    for a, b in zip(one, two):
        grad = b["comm"].get("grad all_reduce (whole)", {}).get("ms", 0.0)
        total_bytes = sum(v["bytes"] for v in b["comm"].values())
        parts = ", ".join(
            f"{op} {v['calls']:.0f}x {v['bytes'] / 1e6:.3f} MB {v['ms']:.1f} ms"
            for op, v in b["comm"].items()
            if v["calls"]
        )
        print(
            f"{a['arch']:>15} {a['d_sae']:>6} {a['tokens_per_s']:>13.0f} {b['tokens_per_s']:>14.0f} "
            f"{b['tokens_per_s'] / a['tokens_per_s']:>6.2f}  total {total_bytes / 1e6:.2f} MB; "
            f"gradient all-reduce {grad:.1f} ms of a {b['step_ms']:.1f} ms step; {parts}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--widths", type=int, nargs="+", default=[2304, 4608])
    ap.add_argument("--archs", nargs="+", default=["topk", "mutual_choice", "feature_choice"])
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if "RANK" in os.environ:
        return worker(args)
    one = [run(a, w, args) for w in args.widths for a in args.archs]
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "two.json")
        argv = [a for a in sys.argv[1:]]
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            "--standalone",
            __file__,
            *argv,
            "--out",
            out,
        ]
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        with open(out) as f:
            two = json.load(f)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads in the 1-process run; batch {args.batch}, "
        f"d_in {args.d_in}, k {args.k}, {args.steps} timed steps (median)"
    )
    report(one, two)
    print(json.dumps({"one": one, "two": two}))


if __name__ == "__main__":
    main()
