"""Cost of g-SAE training (TopK with ``selection: gradient``) against plain TopK, per token, on the embedded model.

    python experiments/bench_gsae.py [--contexts 32] [--rounds 2] [--layer 15] [--d-sae 2304] [--k 32]

Times, interleaved in rounds on the same tokens (context 128, 16 contexts per forward, like the main job):
1. the model's share per token: activations only (the forward cut after the layer: what the cache writer and the
   plain stream run) against activations + gradients (the gradient stream: the whole forward, the summed
   next-token CE, a backward from the loss to the hook);
2. one SAE training step per token (``training.step.train_step``: forward, backward, Adam, renorm) of TopK and of
   the g-SAE on a batch of 1,024 real rows with their real gradients.
Prints a table: tokens/s of each part and the whole per-token cost of training TopK from a stream, and g-SAE from
the gradient stream, and their ratio. (Training TopK from an existing cache costs its step alone, plus the
one-time caching, which runs the same cut forward.)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from sae_lab.activations.generate import ActivationGenerator
from sae_lab.activations.grad_stream import activations_and_gradients
from sae_lab.data.config import DataConfig
from sae_lab.data.packing import iter_contexts
from sae_lab.models import load_model
from sae_lab.saes import build_sae
from sae_lab.training.config import TrainConfig
from sae_lab.training.schedule import make_scheduler
from sae_lab.training.step import make_optimizer, train_step

FORWARD_BATCH = 16


def model_rates(model, hook: str, tokens: np.ndarray, rounds: int) -> tuple[list[float], list[float], tuple]:
    """tokens/s of the cut forward and of forward + backward, per round; and one batch's (acts, grads)."""
    gen = ActivationGenerator(model, [hook])
    cut, full, sample = [], [], None
    for _ in range(rounds):
        t = time.perf_counter()
        for s in range(0, len(tokens), FORWARD_BATCH):
            gen.forward(tokens[s : s + FORWARD_BATCH])
        cut.append(tokens.size / (time.perf_counter() - t))
        t = time.perf_counter()
        parts = [
            activations_and_gradients(model, hook, tokens[s : s + FORWARD_BATCH])
            for s in range(0, len(tokens), FORWARD_BATCH)
        ]
        full.append(tokens.size / (time.perf_counter() - t))
        sample = parts
    acts = torch.cat([a.reshape(-1, a.shape[-1]) for a, _ in sample])
    grads = torch.cat([g.reshape(-1, g.shape[-1]) for _, g in sample])
    return cut, full, (acts, grads)


def step_rates(x: torch.Tensor, g: torch.Tensor, d_sae: int, k: int, steps: int, rounds: int) -> dict[str, list]:
    """tokens/s of train_step for TopK and the g-SAE on the same batch, interleaved."""
    cfg = TrainConfig(batch_size=len(x), total_tokens=10**9, progress=False, device="cpu")
    runs = {}
    for name, extra in (("topk", {}), ("g-SAE", {"selection": "gradient", "grad_beta": 1.0})):
        torch.manual_seed(0)
        sae = build_sae(dict(architecture="topk", d_in=x.shape[1], d_sae=d_sae, k=k, **extra))
        sae.init_b_dec(x, "mean")
        opt = make_optimizer(sae, 1e-4, (0.9, 0.999), 1e-8)
        runs[name] = (sae, opt, make_scheduler(opt, cfg), g if extra else None)
    out = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (sae, opt, sched, grad) in runs.items():
            train_step(sae, opt, sched, x, grad=grad)  # warm
            t = time.perf_counter()
            for _ in range(steps):
                train_step(sae, opt, sched, x, grad=grad)
            out[name].append(steps * len(x) / (time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    torch.manual_seed(0)
    model = load_model("embedded", device="cpu")
    hook = f"blocks.{a.layer}.hook_resid_post"
    data = DataConfig(context_length=128)
    tokens = np.stack([c for _, c in zip(range(a.contexts), iter_contexts(data, model.tokenizer))])
    cut, full, (acts, grads) = model_rates(model, hook, tokens, a.rounds)
    keep = acts.norm(dim=-1) <= 10 * acts.norm(dim=-1).median()  # the main job's outlier rule
    acts, grads = acts[keep], grads[keep]
    scale = acts.shape[1] ** 0.5 / float(acts.norm(dim=-1).mean())
    x, g = acts[: a.batch] * scale, grads[: a.batch] / scale  # normalised units, as the stream yields them
    steps = step_rates(x.contiguous(), g.contiguous(), a.d_sae, a.k, a.steps, a.rounds)
    med = statistics.median
    r_cut, r_full, r_t, r_g = med(cut), med(full), med(steps["topk"]), med(steps["g-SAE"])
    topk_stream = 1 / (1 / r_cut + 1 / r_t)
    gsae_stream = 1 / (1 / r_full + 1 / r_g)
    print(
        f"torch threads {torch.get_num_threads()}; {tokens.size} tokens, layer {a.layer}, d_sae {a.d_sae}, "
        f"k {a.k}, batch {a.batch}; rounds {a.rounds}"
    )
    print("| part | tokens/s (median; rounds) |\n|---|---:|")
    print(
        f"| model: activations only (forward cut after layer {a.layer}) | {r_cut:,.0f} "
        f"({', '.join(f'{v:,.0f}' for v in cut)}) |"
    )
    print(
        f"| model: activations + gradients (full forward + backward to the hook) | {r_full:,.0f} "
        f"({', '.join(f'{v:,.0f}' for v in full)}) |"
    )
    print(f"| SAE step: TopK | {r_t:,.0f} ({', '.join(f'{v:,.0f}' for v in steps['topk'])}) |")
    print(f"| SAE step: g-SAE | {r_g:,.0f} ({', '.join(f'{v:,.0f}' for v in steps['g-SAE'])}) |")
    print(f"| TopK from a stream (model + step) | {topk_stream:,.0f} |")
    print(f"| g-SAE from the gradient stream (model + step) | {gsae_stream:,.0f} |")
    print(
        f"g-SAE / TopK wall time per token: stream {topk_stream / gsae_stream:.2f}x; "
        f"vs TopK from a cache (step only) {r_t / gsae_stream:.1f}x; model part {r_cut / r_full:.2f}x, "
        f"step part {r_t / r_g:.2f}x"
    )
    with torch.no_grad():
        sae = build_sae(dict(architecture="topk", d_in=x.shape[1], d_sae=a.d_sae, k=a.k))
        sae.init_b_dec(x, "mean")
        effect = (g @ sae.W_dec.t()).abs()
    print(
        f"|d_i . dL/dx'| at init over the batch: median {float(effect.median()):.3g}, "
        f"99th percentile {float(effect.flatten().kthvalue(int(0.99 * effect.numel())).values):.3g}"
    )


if __name__ == "__main__":
    main()
