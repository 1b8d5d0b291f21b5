"""Data-parallel training under torchrun: what the trainer adds around the per-step math.

``torchrun --nproc_per_node N sae-lab train cfg.yaml`` starts N ranks (gloo on CPU, NCCL on CUDA; see
sae_lab/distributed.py). ``train.batch_size`` stays the *global* batch: each rank trains on its
batch_size / N rows of every global batch. From a cache, a run with N ranks therefore follows the same trajectory
as one process (up to float summation order), and its checkpoints resume under any N that divides the batch.
From a live stream it does not: each rank runs the model on every N-th context and shuffles them in its own
buffer (seeded by rank), so a global batch holds other tokens than one process's shuffle buffer would give.
The SAEs are trained on the same data with the same rules, but not on the same batches, and differ from a
one-process run's as two seeds do (a cache gives reproducible DDP runs).

- data: rank r takes rows [r·s, (r+1)·s) of each global batch (a cache reads only those rows), or, for a
  live stream, every N-th context (``rank_batches``);
- gradients: summed over ranks with one all-reduce per parameter (``all_reduce_grads``): each rank's loss is
  its share of the global loss (global FVU/AuxK denominators), so the sum is the one-process gradient. Clipping,
  the decoder projection and Adam then run on identical gradients on every rank;
- the batch-level rules (dead-latent counts, Mutual/Feature Choice thresholds and demand, loss denominators,
  threshold calibration) reduce inside the SAEs through sae_lab.distributed while ``sharded_batches`` is on;
- state: rank 0 alone decides fresh/resume and reads the checkpoint; the outcome (or its error) and then
  every SAE's parameters and buffers are broadcast, so all ranks start identical (``on_main``, ``sync_saes``);
- only rank 0 writes to the run directory (``Sweep.main`` in training/sweep.py).
"""

from __future__ import annotations

import math
import pickle
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from sae_lab.activations.source import ActivationSource, hook_parts
from sae_lab.configbase import ConfigError
from sae_lab.distributed import broadcast_object, world


def check_world(batch_size: int) -> None:
    """The global batch must split evenly across ranks."""
    n = world()[1]
    if batch_size % n:
        raise ConfigError(
            f"train.batch_size={batch_size} does not split across {n} ranks (torchrun "
            f"--nproc_per_node x --nnodes); use a multiple of {n}, e.g. {math.ceil(batch_size / n) * n}"
        )


def rank_batches(
    source: ActivationSource, batch_size: int, seed: int, skip_batches: int, device
) -> Iterator[torch.Tensor]:
    """This rank's part of every global batch: the source's own ``iter_rank_batches`` when it has one (a cache
    reads only this rank's rows; a stream runs the model on this rank's contexts), else a slice of the global
    batch. One process: ``source.iter_batches`` itself."""
    rank, n = world()
    if n == 1:
        return source.iter_batches(batch_size, seed=seed, skip_batches=skip_batches, device=device)
    own = getattr(source, "iter_rank_batches", None)
    if own is not None:
        return own(batch_size, rank, n, seed=seed, skip_batches=skip_batches, device=device)
    s = batch_size // n
    return (
        x[rank * s : (rank + 1) * s]
        for x in source.iter_batches(batch_size, seed=seed, skip_batches=skip_batches, device=device)
    )


def all_reduce_grads(sae: torch.nn.Module) -> None:
    """Sum every parameter's gradient over the ranks (a missing gradient counts as zeros), in place."""
    work = []
    for p in sae.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        g = p.grad if p.grad.is_contiguous() else p.grad.t()  # W_enc's gradient is a transposed view
        if not g.is_contiguous():
            p.grad = g = p.grad.contiguous()
        work.append(dist.all_reduce(g, async_op=True))
    for w in work:
        w.wait()


def grad_hook(user_hook: Callable | None) -> Callable | None:
    """The hook train_step runs after backward: the gradient all-reduce (under torchrun), then the user's."""
    if world()[1] == 1:
        return user_hook

    def hook(sae: torch.nn.Module) -> None:
        all_reduce_grads(sae)
        if user_hook is not None:
            user_hook(sae)

    return hook


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and return its result on every rank; an exception it raises is raised on every
    rank (so a refused run directory stops all ranks with rank 0's message, instead of leaving them waiting)."""
    if world()[1] == 1:
        return fn()
    box: tuple[bool, Any] = (True, None)
    if world()[0] == 0:
        try:
            box = (True, fn())
        except Exception as e:  # noqa: BLE001 -- re-raised on every rank below
            box = (False, e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}"))
    ok, value = broadcast_object(box)
    if not ok:
        raise value
    return value


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 -- any pickling failure
        return False


def sync_saes(saes: list[torch.nn.Module]) -> None:
    """Copy rank 0's parameters and buffers (b_dec init, a restored checkpoint) to every rank."""
    if world()[1] == 1:
        return
    for sae in saes:
        for t in [*sae.parameters(), *sae.buffers()]:
            dist.broadcast(t.data, src=0)


def check_same(what: str, value: float | str, fix: str) -> None:
    """Raise ConfigError on every rank when ranks disagree on ``value`` (e.g. the config hash, norm scale)."""
    if world()[1] == 1:
        return
    values = [None] * world()[1]
    dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise ConfigError(f"the ranks disagree on {what}: {values} (by rank); {fix}")


def sync_norm_scale(source: ActivationSource, rtol: float = 1e-5) -> None:
    """Every rank normalises with rank 0's scales, one per hook (a stream estimates them on each rank, a cache
    reads them from its manifest); a rank whose own estimate differs by more than ``rtol`` read other data:
    ConfigError on all."""
    if world()[1] == 1:
        return
    parts = hook_parts(source)
    scales = [None] * world()[1]
    dist.all_gather_object(scales, [float(p.norm_scale) for p in parts.values()])
    if any(abs(s - r) > rtol * abs(r) for mine in scales for s, r in zip(mine, scales[0])):
        raise ConfigError(
            f"the ranks disagree on the activation normalisation scale: {scales} (by rank; one per hook); every "
            "rank must read the same cache or data source"
        )
    if hasattr(source, "hook_parts"):
        for p, s in zip(parts.values(), scales[0]):
            p.norm_scale = s
    else:
        source.norm_scale = scales[0][0]
