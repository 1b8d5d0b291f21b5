"""bf16 encoder pre-activations (``train.dtype: bfloat16``, autocast) against float32, at equal tokens.

    python experiments/bf16_parity.py --train train.npy --heldout heldout.npy [--d-sae 4608] [--k 32] [--epochs 3]

Trains sae-lab's TopK twice on the same rows in the same order (``bench_train.run_sae_lab``, the trainer's
step and default TrainConfig incl. lr: auto), once per compute dtype, and prints held-out FVU, dead latents
and tokens/s, plus a plain [batch x d_in] @ [d_in x d_sae] matmul in each dtype on this CPU. Parity mark:
held-out FVU of bf16 within 1% of float32's. The held-out metrics are computed in float32 for both.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(1, str(HERE.parent))

import bench_train  # noqa: E402
import torch  # noqa: E402
from _common import load_rows, permute_rows  # noqa: E402


def matmul_ms(batch: int, d_in: int, d_sae: int, dtype: torch.dtype, reps: int = 10) -> float:
    a, b = torch.randn(batch, d_in, dtype=dtype), torch.randn(d_sae, d_in, dtype=dtype)
    for _ in range(2):
        a @ b.t()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b.t()
    return 1e3 * (time.perf_counter() - t) / reps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--heldout", required=True)
    p.add_argument("--d-sae", type=int, default=4608)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    train, heldout = permute_rows(load_rows(a.train), 0), load_rows(a.heldout)
    res = {}
    for dtype in ("float32", "bfloat16"):
        r = bench_train.run_sae_lab(
            "topk", train, heldout, d_sae=a.d_sae, k=a.k, batch=a.batch, epochs=a.epochs, dtype=dtype
        )
        res[dtype] = {key: r[key] for key in ("heldout_fvu", "dead_frac", "tokens_per_s", "lr", "n_train")}
        res[dtype]["matmul_ms"] = matmul_ms(a.batch, train.shape[1], a.d_sae, getattr(torch, dtype))
        print(
            f"{dtype}: held-out FVU {r['heldout_fvu']:.4f}, dead {100 * r['dead_frac']:.1f}%, "
            f"{r['tokens_per_s']:,.0f} tok/s, encoder-shaped matmul {res[dtype]['matmul_ms']:.1f} ms",
            flush=True,
        )
    f32, b16 = res["float32"], res["bfloat16"]
    rel = b16["heldout_fvu"] / f32["heldout_fvu"] - 1
    print(
        f"bf16 vs fp32: FVU {100 * rel:+.2f}% (parity within 1%: {'yes' if abs(rel) <= 0.01 else 'NO'}); "
        f"speed {b16['tokens_per_s'] / f32['tokens_per_s']:.2f}x; matmul {f32['matmul_ms'] / b16['matmul_ms']:.2f}x"
    )
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps({"argv": sys.argv[1:], "results": res, "fvu_rel": rel}, indent=2))


if __name__ == "__main__":
    main()
