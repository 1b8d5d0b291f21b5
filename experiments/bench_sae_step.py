"""Time one SAE training step (forward + backward + the trainer's Adam + decoder renorm) per architecture.

    python experiments/bench_sae_step.py [--seconds 3] [--batch 1024] [--d-in 576] [--d-sae 4608] [--k 32]
        [--profile N]   # then also a torch.profiler table of N TopK steps, by operator

Prints tokens/s per architecture and its step-time ratio to TopK, MP with the Gram update vs the full
recompute, the TopK step's achieved FLOP/s as a fraction of a plain fp32 matmul measured in the same run, and
MP's two dense matmuls (Gram matrix, first correlations) timed alone as a multiple of TopK's step.
Architectures are timed in interleaved rounds so that load from other processes hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sae_lab.saes import build_sae
from sae_lab.training.step import make_optimizer


def make_step(cfg: dict, x: torch.Tensor):
    torch.manual_seed(0)
    sae = build_sae(cfg)
    sae.init_b_dec(x[:256], "mean")
    opt = make_optimizer(sae, 1e-4, (0.9, 0.999), 1e-8)  # the trainer's optimiser (fused Adam)

    def step() -> None:
        out = sae.training_forward(x)
        loss = ((out.x_hat - x) ** 2).sum(-1).mean() + sum(out.aux_losses.values(), torch.zeros((), device=x.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grads()
        opt.step()
        sae.normalize_decoder()

    return step


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0, help="rough time budget per architecture")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--profile", type=int, default=0, help="profile this many TopK steps after the timing")
    a = ap.parse_args()
    torch.manual_seed(0)
    x = torch.randn(a.batch, a.d_in) + 0.3 * torch.randn(a.d_in)
    base = dict(d_in=a.d_in, d_sae=a.d_sae, k=a.k)
    variants = {
        "topk": dict(architecture="topk"),
        "mutual_choice": dict(architecture="mutual_choice"),
        "feature_choice": dict(architecture="feature_choice"),
        "feature_choice(zipf)": dict(architecture="feature_choice", capacity_rule="zipf"),
        "matching_pursuit(gram)": dict(architecture="matching_pursuit", mp_update="gram"),
        "matching_pursuit(full)": dict(architecture="matching_pursuit", mp_update="full"),
    }
    steps = {name: make_step({**base, **v}, x) for name, v in variants.items()}
    W = torch.randn(a.d_sae, a.d_in)
    matmul = lambda: x @ W.t()  # noqa: E731  the encoder's matmul: the step's dominant dense op
    times: dict[str, list[float]] = {name: [] for name in [*steps, "matmul"]}
    for fn in [*steps.values(), matmul]:
        fn(), fn()  # warm-up (thresholds, allocator, threads)
    t_end = time.perf_counter() + a.seconds * len(steps)
    rounds = 0
    while time.perf_counter() < t_end or rounds < 2:
        for name, fn in steps.items():
            if name.endswith("(full)") and rounds >= 2:
                continue  # ~k matmuls per step: two samples are enough
            times[name] += timed(fn, 1)
        times["matmul"] += timed(matmul, 3)
        rounds += 1
    med = {n: statistics.median(t) for n, t in times.items()}
    print(
        f"shape: batch {a.batch}, d_in {a.d_in}, d_sae {a.d_sae}, k {a.k}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {rounds} interleaved rounds"
    )
    print(f"{'architecture':26s} {'step ms':>9s} {'tokens/s':>10s} {'step / TopK':>12s}")
    for n in steps:
        print(f"{n:26s} {1e3 * med[n]:9.1f} {a.batch / med[n]:10.0f} {med[n] / med['topk']:12.2f}")
    mm_flops = 2 * a.batch * a.d_in * a.d_sae
    # TopK step: encoder matmul + sparse decode fwd, grads of decoder rows/values and encoder columns (2 each)
    step_flops = mm_flops + 2 * a.batch * a.k * a.d_in * 4
    print(
        f"plain fp32 matmul [{a.batch}x{a.d_in}]@[{a.d_in}x{a.d_sae}]: {1e3 * med['matmul']:.1f} ms = "
        f"{mm_flops / med['matmul'] / 1e9:.1f} GFLOP/s"
    )
    ach = step_flops / med["topk"] / 1e9
    print(
        f"TopK step: {step_flops / 1e9:.2f} GFLOP useful work -> {ach:.1f} GFLOP/s = "
        f"{ach / (mm_flops / med['matmul'] / 1e9):.0%} of the measured matmul throughput"
    )
    g, f = med["matching_pursuit(gram)"], med["matching_pursuit(full)"]
    print(f"MP Gram update vs full recompute: {1e3 * g:.0f} ms vs {1e3 * f:.0f} ms per step ({f / g:.1f}x faster)")
    mp_matmul_floor(W, x, med["topk"])
    if a.profile:
        profile_steps(steps["topk"], a.profile)


def mp_matmul_floor(W: torch.Tensor, x: torch.Tensor, topk_step: float) -> None:
    """The two dense matmuls every exact MP step needs, timed alone: the Gram matrix (as MP computes it, the
    mirrored upper triangle, and as one full matmul) and the first correlations (x - b_dec) W_decᵀ."""
    try:
        from sae_lab.saes.matching_pursuit import symmetric_gram
    except ImportError:  # a checkout from before the symmetric Gram (PYTHONPATH=...)
        return
    W = torch.nn.functional.normalize(W, dim=1)
    G = W.new_empty(W.shape[0], W.shape[0])
    parts = {
        "Gram, mirrored upper triangle": lambda: symmetric_gram(W, G),
        "Gram, one full matmul": lambda: torch.mm(W, W.t(), out=G),
        "first correlations": lambda: x @ W.t(),
    }
    med = {}
    for name, fn in parts.items():
        fn()
        med[name] = statistics.median(timed(fn, 5))
    floor = med["Gram, mirrored upper triangle"] + med["first correlations"]
    print(
        "MP's dense matmuls alone: "
        + ", ".join(f"{n} {1e3 * t:.1f} ms" for n, t in med.items())
        + f"; Gram + correlations = {floor / topk_step:.2f}x TopK's whole step"
    )


def profile_steps(step, n: int) -> None:
    """torch.profiler over ``n`` steps: self CPU time per operator, and per step."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    print(f"TopK step profile, {n} steps (self CPU time; per-step ms = total / {n}):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=48))


if __name__ == "__main__":
    main()
