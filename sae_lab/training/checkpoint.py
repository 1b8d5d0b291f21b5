"""Atomic checkpoints (sae_lab.fileio.atomic_path); keep the newest few; load with weights_only=True.

A checkpoint is a dict of tensors and plain Python values only (RNG states included), so
``torch.load(path, weights_only=True)`` reads it without unpickling arbitrary objects.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from sae_lab.fileio import atomic_path, checksum_path, read_checksum, remove_temps, sha256_file, write_checksum

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^ckpt_(\d{14})\.pt$")


class CheckpointError(RuntimeError):
    """No usable checkpoint, or a checkpoint that does not belong to this run."""


def checkpoint_name(tokens_seen: int) -> str:
    return f"ckpt_{tokens_seen:014d}.pt"


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in ``directory``, newest (most tokens) first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if _NAME_RE.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME_RE.match(p.name).group(1)), reverse=True)


# ---- RNG state as tensors / plain values ----------------------------------------------------------
def capture_rng() -> dict:
    """torch (CPU and CUDA), Python and NumPy global RNG states, stored as tensors and plain types."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
        "numpy": {
            "name": np_name,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- finiteness ------------------------------------------------------------------------------------
def _tensors(obj: Any) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        yield "", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            for path, t in _tensors(v):
                yield f"{k}.{path}" if path else str(k), t
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            for path, t in _tensors(v):
                yield f"{i}.{path}" if path else str(i), t


def all_finite(t: torch.Tensor) -> bool:
    """No NaN/inf in ``t``: its min and max (one pass, no [N] bool temporary; NaN propagates) are finite."""
    if t.numel() == 0:
        return True
    lo, hi = torch.aminmax(t.detach())
    return bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))


def first_non_finite(state: Any) -> str | None:
    """Path of the first floating tensor in ``state`` holding NaN or inf, or None if all are finite."""
    for path, t in _tensors(state):
        if t.is_floating_point() and not all_finite(t):
            return path
    return None


# ---- write / read ------------------------------------------------------------------------------------
def save_checkpoint(directory: Path, state: dict, keep: int = 2) -> Path:
    """Atomically write ``state`` as ``ckpt_<tokens_seen>.pt`` and delete all but the ``keep`` newest.

    Refuses (CheckpointError) to write a state holding NaN/inf, so a good checkpoint is never replaced
    by a broken one.
    """
    bad = first_non_finite(state["saes"])
    if bad is not None:
        raise CheckpointError(f"refusing to write a checkpoint with non-finite values in saes.{bad}")
    directory.mkdir(parents=True, exist_ok=True)
    remove_temps(directory)  # a checkpoint write interrupted by a kill
    final = directory / checkpoint_name(int(state["tokens_seen"]))
    with atomic_path(final) as tmp:
        torch.save({"format": FORMAT_VERSION, **state}, tmp)
        digest = sha256_file(tmp)
    write_checksum(final, digest)
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
        checksum_path(old).unlink(missing_ok=True)
    return final


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Load one checkpoint with ``weights_only=True``, after checking it against its ``.sha256`` sidecar."""
    recorded = read_checksum(path)
    if recorded is not None and recorded[0] != sha256_file(path):
        raise CheckpointError(f"{path} does not match its recorded SHA-256 ({checksum_path(path).name}): it is damaged")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a sae-lab checkpoint (format {FORMAT_VERSION})")
    return state


def load_latest(directory: Path, map_location: str | torch.device = "cpu") -> tuple[Path, dict] | None:
    """The newest checkpoint in ``directory`` that loads, falling back to older ones if it is corrupt."""
    errors = []
    for path in list_checkpoints(directory):
        try:
            found = path, load_checkpoint(path, map_location)
        except Exception as e:  # a truncated or corrupt file: try the previous one
            errors.append(f"{path.name}: {e}")
            log.warning("checkpoint %s is unusable (%s); trying an older one", path, e)
            continue
        return found
    if errors:
        raise CheckpointError(f"no checkpoint in {directory} could be loaded: " + "; ".join(errors))
    return None
