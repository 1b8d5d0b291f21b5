"""Cost of one attribution pass against a plain forward + backward of the same pair (issue 10, target <= 4x).

    python experiments/bench_attribution.py [--rounds 7] [--tokens 32] [--d-sae 2304] [--k 32]

On the embedded model (SmolLM2-135M, fp32, CPU) with 3 spliced TopK SAEs (blocks.6.hook_resid_post,
blocks.10.attn.hook_z, blocks.14.hook_mlp_out) and a clean/corrupt pair of ``--tokens`` tokens each:
- reference: the plain model's forward of the pair (a batch of 2, with autograd) and the backward of the
  logit difference to the embeddings;
- attribution: ``Spliced.attribute`` (a corrupt forward, a clean forward with autograd, one backward).
Reference and attribution alternate in rounds, so load from other processes hits both alike; prints the
median times and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sae_lab.circuits import Spliced
from sae_lab.models import load_model
from sae_lab.saes import SAEConfig, build_sae

HOOKS = ["blocks.6.hook_resid_post", "blocks.10.attn.hook_z", "blocks.14.hook_mlp_out"]


def pair(model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    text = (
        "On a sunny morning in the old part of the town, after a long walk along the river and a short stop "
        "at the market, Mary and John went to the store, and John gave a book to"
    )
    full = model.bridge.to_tokens(text)
    ids = torch.cat([full[:, :1], full[:, 1:][:, -(n - 1) :]], dim=1)  # BOS + the last n - 1 tokens
    if ids.shape[1] != n:
        raise SystemExit(f"the benchmark text has only {ids.shape[1]} tokens; --tokens must be <= that")
    corrupt = ids.clone()
    mary = model.tokenizer.encode(" Mary", add_special_tokens=False)[0]
    corrupt[corrupt == mary] = model.tokenizer.encode(" Anna", add_special_tokens=False)[0]
    return ids, corrupt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--d-sae", type=int, default=2304)
    ap.add_argument("--k", type=int, default=32)
    a = ap.parse_args()
    model = load_model("embedded", device="cpu")
    for p in model.bridge.parameters():
        p.requires_grad_(False)
    clean, corrupt = pair(model, a.tokens)
    ia, ib = (model.tokenizer.encode(t, add_special_tokens=False)[0] for t in (" Mary", " John"))

    def metric(logits):
        return logits[-1, ia] - logits[-1, ib]

    saes = [
        build_sae(SAEConfig(architecture="topk", d_in=576, d_sae=a.d_sae, k=a.k, hook_name=h, name=f"s{i}")).eval()
        for i, h in enumerate(HOOKS)
    ]

    def reference() -> None:
        emb = {}

        def keep(t, hook):
            t.requires_grad_(True)
            emb["e"] = t
            return t

        logits = model.bridge.run_with_hooks(torch.cat([clean, corrupt]), fwd_hooks=[("hook_embed", keep)])
        torch.autograd.grad(metric(logits[0]) + metric(logits[1]), [emb["e"]])

    with Spliced(model, saes) as s:

        def attribution() -> None:
            s.attribute(clean, corrupt, metric)

        ref, att = [], []
        reference(), attribution()  # warm-up
        for _ in range(a.rounds):
            for fn, acc in ((reference, ref), (attribution, att)):
                t0 = time.perf_counter()
                fn()
                acc.append(time.perf_counter() - t0)
    r, t = statistics.median(ref), statistics.median(att)
    print(
        f"tokens per prompt: {clean.shape[1]}, spliced hooks: {len(HOOKS)}, d_sae {a.d_sae}, k {a.k}, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"plain forward+backward of the pair: {r * 1e3:.1f} ms (median of {a.rounds})")
    print(f"attribution pass (3 hooks, error nodes): {t * 1e3:.1f} ms")
    print(f"ratio: {t / r:.2f}x (target <= 4x)")


if __name__ == "__main__":
    main()
