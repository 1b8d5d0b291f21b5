"""Thin helpers over torch.distributed that also work in a single plain process.

Under ``torchrun`` (RANK/WORLD_SIZE set) the process group is started with gloo on CPU and NCCL on
CUDA; otherwise every call is a no-op for rank 0 of 1.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world_size), starting the process group on first use under torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def local_device(requested: str) -> str:
    """Under torchrun on CUDA, each rank takes its own GPU; otherwise the requested device."""
    if requested in ("auto", "cuda") and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return requested


def shut_down(ok: bool) -> None:
    """End of a command under torchrun: after a success every rank waits for the others (rank 0 writes last), then
    the process group is destroyed. A rank that leaves with gloo's threads still running can abort ("terminate
    called without an active exception"), and torchrun then kills the ranks still writing. A no-op otherwise."""
    if not dist.is_initialized():
        return
    if ok:
        dist.barrier()
    dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank (identity in a single process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_ok(ok: bool) -> bool:
    """True on every rank only if ``ok`` was true on every rank (so one rank's failure stops all)."""
    if not dist.is_initialized():
        return ok
    flag = torch.tensor([1 if ok else 0])
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


# ---- data-parallel training: batch-level reductions ------------------------------------------------------
# Training under torchrun splits every global batch across ranks. The SAEs' batch-level rules (loss
# denominators, dead-latent counts, Mutual/Feature Choice thresholds) call the helpers below; they are no-ops
# unless the trainer switched sharding on (``sharded_batches``), so a single process, evaluation and analysis
# never communicate. Every rank must call them in the same order with same-shaped tensors.

_SHARDS = 1  # number of ranks sharing each batch while the trainer runs under torchrun, else 1


def shards() -> int:
    """How many ranks share each training batch (1 outside data-parallel training)."""
    return _SHARDS


@contextmanager
def sharded_batches(active: bool = True):
    """Within this block (the trainer's loop), batches are rank-local slices of a global batch and the SAEs'
    batch-level rules reduce across ranks. A no-op in a single process."""
    global _SHARDS
    before = _SHARDS
    _SHARDS = world()[1] if active else 1
    try:
        yield
    finally:
        _SHARDS = before


def all_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over the ranks sharing a batch, in place (returns it); identity when unsharded."""
    if _SHARDS > 1:
        dist.all_reduce(t)
    return t


def global_rows(n_local: int) -> int:
    """Rows of the global batch when each rank holds ``n_local`` (every rank holds the same number)."""
    return n_local * _SHARDS


def gather_cat(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Every rank's ``t`` (same shape on all) concatenated along ``dim``; identity when unsharded."""
    if _SHARDS <= 1:
        return t
    parts = [torch.empty_like(t) for _ in range(_SHARDS)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim)


def sum_sq_dev(x: torch.Tensor) -> torch.Tensor:
    """Σ ||x_i - mean(x)||² over the rows of the global batch (the FVU and AuxK denominators), clamped to
    1e-12. Sharded: the global mean from all-reduced Σx, then the all-reduced sum of squared deviations
    (two passes, as exact as one process up to summation order)."""
    if _SHARDS <= 1:
        return (x - x.mean(0, keepdim=True)).pow(2).sum().clamp_min(1e-12)
    x = x.detach()  # a denominator: the loss's gradient does not flow through it (x and e are data)
    total = all_sum(x.sum(0, keepdim=True))
    mean = total / global_rows(x.shape[0])
    return all_sum((x - mean).pow(2).sum()).clamp_min(1e-12)


def global_kth_largest(top: torch.Tensor, n: int) -> torch.Tensor:
    """Per row of ``top [..., m]`` (each rank's m largest values of a row, m >= min(n, its values), padded
    with 0), the n-th largest value of that row over all ranks (n: tensor of per-row ranks >= 1, or an int)."""
    merged = gather_cat(top, dim=-1)
    m = int(n.max()) if isinstance(n, torch.Tensor) else n
    vals = merged.topk(min(m, merged.shape[-1]), dim=-1).values
    idx = (n - 1) if isinstance(n, torch.Tensor) else torch.full(vals.shape[:-1], n - 1, device=vals.device)
    return vals.gather(-1, idx.long().unsqueeze(-1)).squeeze(-1)
