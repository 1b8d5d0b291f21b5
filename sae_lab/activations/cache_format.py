"""The on-disk format of an activation cache: atomic shard directories and the manifest.

Layout::

    CACHE/
      manifest.json                 header (model, hooks, data spec, stats) + shard list + totals
      shards/000000/                one shard = contexts [i*S, (i+1)*S) of the packed stream
        tokens.npy                  int32 [n, T]
        <hook>.npy                  [n, T, d] in the storage dtype (bfloat16 stored as uint16)
        <hook>.keep.npy             bool [n, T]: positions used for training
        shard.json                  counts and the SHA-256 of every file above

A shard directory is written atomically (``sae_lab.fileio.atomic_path``): a shard that has its final name
is complete. The manifest is always rebuilt from the shard directories.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from sae_lab.fileio import WriteError, atomic_path, atomic_write_text, json_sha256, remove_temps, sha256_file

log = logging.getLogger(__name__)
FORMAT = "sae-lab-activation-cache"
VERSION = 1
MANIFEST = "manifest.json"
SHARDS = "shards"


class CacheError(RuntimeError):
    """A cache that is missing, incomplete, corrupt or does not fit the request."""


def shard_name(index: int) -> str:
    return f"{index:06d}"


def to_storage(t: torch.Tensor, dtype: str) -> np.ndarray:
    """Convert float activations to the storage dtype (bfloat16 as raw uint16 bits)."""
    if dtype == "bfloat16":
        return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return t.to(getattr(torch, dtype)).numpy()


def from_storage(a: np.ndarray, dtype: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """Float32 tensor from stored activations (written into ``out`` if given). Torch converts: its float16 ->
    float32 path is vectorised, several times faster than NumPy's."""
    if not (a.flags.writeable and a.flags.c_contiguous):
        a = np.array(a)  # torch needs a writable array: memory maps are read-only
    if dtype == "bfloat16":
        stored = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    else:
        stored = torch.from_numpy(a)
    if out is None:
        return stored.float()
    return out.copy_(stored)


def write_shard(root: Path, index: int, arrays: dict[str, np.ndarray], info: dict) -> dict:
    """Atomically write one shard directory; returns its shard.json record."""
    try:
        with atomic_path(root / SHARDS / shard_name(index), directory=True) as tmp:
            files = {}
            for name, arr in arrays.items():
                np.save(tmp / f"{name}.npy", arr)
                files[f"{name}.npy"] = sha256_file(tmp / f"{name}.npy")
            record = {"name": shard_name(index), **info, "sha256": files}
            record["checksum"] = _checksum(record)
            (tmp / "shard.json").write_text(json.dumps(record, indent=1))
    except OSError as e:
        if isinstance(e, WriteError) or e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise CacheError(
                f"disk full while writing shard {shard_name(index)} in {root} (or a file-size "
                f"limit). Free space "
                f"and run the same command again: it resumes from the last complete shard."
            ) from None
        raise CacheError(f"could not write shard {shard_name(index)} in {root}: {e}") from None
    return record


def remove_stale_tmp(root: Path) -> None:
    """Delete half-written shard directories left by an interrupted run."""
    remove_temps(root / SHARDS)


def read_shard_record(shard_dir: Path) -> dict | None:
    """A shard's shard.json, or None if it is missing, truncated or not a shard record."""
    try:
        rec = json.loads((shard_dir / "shard.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("sha256"), dict) or "n_contexts" not in rec:
        return None
    if "checksum" in rec and rec["checksum"] != _checksum({k: v for k, v in rec.items() if k != "checksum"}):
        return None  # an edit that still parses (a flipped digit)
    return rec


def _matches(rec: dict, digest: str | None) -> bool:
    """A shard belongs to the cache of ``digest`` (records from before shards carried it are accepted)."""
    return digest is None or rec.get("identity_sha256", digest) == digest


def completed_shards(root: Path, digest: str | None = None) -> dict[int, dict]:
    """The shard.json records of every complete shard directory (of the cache identity ``digest``), by index."""
    out = {}
    for d in sorted((root / SHARDS).glob("[0-9]" * 6)):
        rec = read_shard_record(d)
        if rec is not None and _matches(rec, digest):
            out[int(d.name)] = rec  # a damaged or foreign-config shard counts as missing: rewritten on resume
    return out


def shard_problem(shard_dir: Path, rec: dict | None, digest: str | None, checksums: bool = True) -> str | None:
    """Why a shard directory cannot be used (naming the file), or None when it is sound."""
    if rec is None:
        return "shard.json is missing, truncated or corrupt"
    if not _matches(rec, digest):
        return "was made with a different config (identity mismatch)"
    for fname, want in rec["sha256"].items():
        path = shard_dir / fname
        if not path.is_file():
            return f"missing file {fname}"
        if checksums and sha256_file(path) != want:
            return f"{fname} is corrupt (SHA-256 mismatch)"
    return None


def sound_shards(root: Path, digest: str, rank: int = 0, world_size: int = 1) -> dict[int, dict]:
    """Check this rank's shard directories against their own checksums; delete (and name) the damaged ones, so a
    rerun of `sae-lab cache` repairs them. Returns the sound shards' records by index."""
    out = {}
    for d in sorted((root / SHARDS).glob("[0-9]" * 6)):
        index = int(d.name)
        if index % world_size != rank:
            continue
        rec = read_shard_record(d)
        problem = shard_problem(d, rec, digest)
        if problem is None:
            out[index] = rec
            continue
        log.warning("cache %s: shard %s %s; rewriting it", root, d.name, problem)
        shutil.rmtree(d)  # a shard directory (our own name, inside our cache's shards/)
    return out


def read_manifest(root: Path) -> dict:
    """Load and sanity-check a manifest, with clear errors for a missing or foreign directory."""
    path = Path(root) / MANIFEST
    if not Path(root).exists():
        raise CacheError(f"activation cache '{root}' does not exist; create it with `sae-lab cache CONFIG`")
    if not path.is_file():
        raise CacheError(
            f"'{root}' has no {MANIFEST}: it is not an activation cache (or its creation was "
            f"interrupted before the first shard; rerun `sae-lab cache`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CacheError(f"{path} is corrupt ({e}); rerun `sae-lab cache` with the same config to rebuild it")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CacheError(
            f"{path} is not an sae-lab activation cache manifest (damaged or foreign); rerun "
            "`sae-lab cache` with the same config to rebuild it"
        )
    if "checksum" in manifest and manifest.pop("checksum") != _checksum(manifest):
        raise CacheError(
            f"{path} is damaged (its checksum does not match its contents); rerun `sae-lab cache` "
            "with the same config to rebuild it"
        )
    missing = [
        k for k in ("status", "shards", "hooks", "storage_dtype", "context_length", "totals") if k not in manifest
    ]
    if missing:
        raise CacheError(
            f"{path} is damaged (no {', '.join(missing)}); rerun `sae-lab cache` with the same config to rebuild it"
        )
    return manifest


def build_manifest(root: Path, header: dict, final: bool) -> dict:
    """Combine the header with the shard records on disk into the manifest, and write it atomically."""
    shards = completed_shards(root, header.get("identity_sha256"))
    records = [shards[i] for i in sorted(shards)]
    hooks = list(header["hooks"])
    totals = {
        "shards": len(records),
        "contexts": sum(r["n_contexts"] for r in records),
        "tokens": sum(r["n_contexts"] for r in records) * header["context_length"],
        "excluded_special": sum(r["n_special"] for r in records),
        "kept_tokens": {h: sum(r["n_keep"][h] for r in records) for h in hooks},
        "excluded_outliers": {h: sum(r["n_outliers"][h] for r in records) for h in hooks},
    }
    contiguous = [r["index"] for r in records] == list(range(len(records)))
    status = "complete" if final and contiguous else "in_progress"
    manifest = {**header, "status": status, "totals": totals, "shards": records}
    atomic_write_text(root / MANIFEST, json.dumps({**manifest, "checksum": _checksum(manifest)}, indent=1))
    return manifest


def _checksum(manifest: dict) -> str:
    """SHA-256 of the manifest's canonical JSON (without the checksum): catches edits that still parse."""
    return json_sha256(manifest)
