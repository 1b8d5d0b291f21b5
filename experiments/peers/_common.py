"""Shared plumbing for the peer runners: the CLI, data loading, timing and the held-out metrics.

Every runner in this folder runs inside its own peer's virtual environment, so this module needs only
numpy and torch (never sae_lab). ``experiments/bench_train.py`` imports it too, so sae_lab is measured by
exactly the same code.

Protocol (identical for every library):
  - train/held-out activations come from float32 .npy files of shape [n, d_in];
  - the training rows are permuted once with ``torch.randperm`` under ``--seed`` (torch is the same
    version in every venv, so every library sees the same order), then cut into ``n // batch`` whole
    batches, which are materialised before the clock starts (no data loading inside the timed region);
  - the timed region is the library's own training loop/step (forward + backward + optimiser step and
    whatever bookkeeping the library does per step); model and optimiser construction are outside;
  - held-out FVU = sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, the mean taken per dimension over the
    held-out set; dead fraction = share of latents never active on the held-out set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

REQUIRED_KEYS = (
    "library",
    "version",
    "arch",
    "tokens_per_s",
    "heldout_fvu",
    "dead_frac",
    "n_train",
    "k",
    "d_sae",
    "batch",
)


def parse_args(description: str, default_lr_note: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--train", required=True, help="float32 .npy of shape [n, d_in]: training activations")
    p.add_argument("--heldout", required=True, help="float32 .npy of shape [m, d_in]: held-out activations")
    p.add_argument("--d-sae", type=int, default=4608, help="number of latents")
    p.add_argument("--k", type=int, default=32, help="active latents per token (TopK k, or MP steps)")
    p.add_argument("--batch", type=int, default=1024, help="tokens per optimisation step")
    p.add_argument("--lr", type=float, default=None, help=f"learning rate; default: {default_lr_note}")
    p.add_argument("--epochs", type=int, default=1, help="passes over the training set")
    p.add_argument("--seed", type=int, default=0, help="seed for the row permutation and the initialisation")
    p.add_argument("--no-shuffle", action="store_true", help="keep the rows in file order")
    p.add_argument("--max-rows", type=int, default=None, help="train on only the first N rows (after the permutation)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--eval-chunk", type=int, default=4096, help="rows per held-out evaluation chunk")
    p.add_argument("--out", required=True, help="where to write the result JSON")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


def load_rows(path: str) -> torch.Tensor:
    arr = np.load(path, mmap_mode="r")
    if arr.ndim != 2:
        raise SystemExit(f"{path}: expected a 2-d array [n, d_in], got shape {arr.shape}")
    return torch.from_numpy(np.array(arr, dtype=np.float32, copy=True))


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, heldout) as float32 CPU tensors; train is permuted under ``--seed`` unless --no-shuffle."""
    train, heldout = load_rows(args.train), load_rows(args.heldout)
    if train.shape[1] != heldout.shape[1]:
        raise SystemExit(f"d_in differs: train {train.shape[1]}, heldout {heldout.shape[1]}")
    train = permute_rows(train, args.seed, not args.no_shuffle, args.max_rows)
    if train.shape[0] < args.batch:
        raise SystemExit(f"train has {train.shape[0]} rows, fewer than one batch of {args.batch}")
    return train, heldout


def permute_rows(train: torch.Tensor, seed: int, shuffle: bool = True, max_rows: int | None = None) -> torch.Tensor:
    """The benchmark's row order: one torch.randperm under ``seed`` (same in every venv), then a cap."""
    if shuffle:
        perm = torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(seed))
        train = train[perm]
    if max_rows is not None:
        train = train[:max_rows]
    return train


def make_batches(train: torch.Tensor, batch: int, epochs: int) -> list[torch.Tensor]:
    """Whole batches for ``epochs`` passes (the remainder of each pass is dropped), as contiguous tensors."""
    n_batches = train.shape[0] // batch
    one_pass = [train[i * batch : (i + 1) * batch].contiguous() for i in range(n_batches)]
    return one_pass * epochs


@contextmanager
def timer() -> Iterator[dict]:
    box = {}
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box["seconds"] = time.perf_counter() - t0


@torch.no_grad()
def heldout_metrics(
    heldout: torch.Tensor,
    recon_and_active: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    d_sae: int,
    chunk: int = 4096,
) -> dict:
    """FVU and dead fraction on ``heldout``.

    ``recon_and_active(x)`` returns (x_hat [n, d_in], active [d_sae] bool: latents nonzero on any row
    of this chunk), computed with the library's own encode/decode.
    """
    x64 = heldout.double()
    mean = x64.mean(0)
    total_var = float((x64 - mean).pow(2).sum())
    sq_err = 0.0
    ever = torch.zeros(d_sae, dtype=torch.bool)
    for start in range(0, heldout.shape[0], chunk):
        xb = heldout[start : start + chunk]
        x_hat, active = recon_and_active(xb)
        sq_err += float((xb.double() - x_hat.double()).pow(2).sum())
        ever |= active.to(torch.bool).cpu()
    return {
        "heldout_fvu": sq_err / max(total_var, 1e-30),
        "dead_frac": float((~ever).float().mean()),
        "n_heldout": int(heldout.shape[0]),
    }


def active_from_dense(z: torch.Tensor) -> torch.Tensor:
    """Latents with a nonzero code on any row of a dense [n, d_sae] code matrix."""
    return (z != 0).any(dim=0)


def write_result(args: argparse.Namespace, result: dict) -> dict:
    result = {
        **result,
        "k": args.k,
        "d_sae": args.d_sae,
        "batch": args.batch,
        "epochs": args.epochs,
        "seed": args.seed,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }
    missing = [key for key in REQUIRED_KEYS if key not in result]
    if missing:
        raise RuntimeError(f"result lacks {missing}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{args.out}.tmp{os.getpid()}"  # not sae_lab.fileio: this runs in the peers' venvs, without sae_lab
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(json.dumps(result))
    return result


def dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)
