"""The cost of the relative encoder eps: TopK's training step with ``encoder_eps_ratio`` 0 and 2, side by side.

    python experiments/bench_relative_eps.py [--d-in 576] [--widths 2304 9216] [--batch 1024] [--steps 30] [--rounds 5]

Each round times ``--steps`` steps of each variant on the same batch (alternating, after a warm-up), and reports
the median over rounds of the per-step time and the ratio (with / without). CPU unless CUDA is there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sae_lab.saes import SAEConfig, build_sae
from sae_lab.training.schedule import WarmupDecay
from sae_lab.training.step import make_optimizer, train_step


def stepper(d_in: int, d_sae: int, ratio: float, device: torch.device):
    torch.manual_seed(0)
    sae = build_sae(SAEConfig(architecture="topk", d_in=d_in, d_sae=d_sae, k=32, hook_name="x")).to(device)
    opt = make_optimizer(sae, 1e-3, (0.9, 0.999), 1e-8, ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupDecay(10**6, 0, "none", 1.0, 0.0))
    return lambda x: train_step(sae, opt, sched, x)


def time_steps(step, x: torch.Tensor, n: int) -> float:
    if x.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step(x)
    if x.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d-in", type=int, default=576)
    p.add_argument("--widths", type=int, nargs="+", default=[2304, 9216])
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x = torch.randn(a.batch, a.d_in, device=device)
    print(f"device {device}, d_in {a.d_in}, batch {a.batch}")
    print("| d_sae | step, plain eps (ms) | step, relative eps (ms) | ratio |")
    print("|---:|---:|---:|---:|")
    for width in a.widths:
        steps = {r: stepper(a.d_in, width, r, device) for r in (0.0, 2.0)}
        for s in steps.values():
            time_steps(s, x, 3)  # warm-up
        times: dict[float, list[float]] = {0.0: [], 2.0: []}
        for _ in range(a.rounds):
            for r, s in steps.items():
                times[r].append(time_steps(s, x, a.steps))
        plain, rel = statistics.median(times[0.0]), statistics.median(times[2.0])
        print(f"| {width:,} | {1e3 * plain:.1f} | {1e3 * rel:.1f} | {rel / plain:.3f} |", flush=True)


if __name__ == "__main__":
    main()
