"""Build (or resume) an activation cache, in one process or split across ``torchrun`` ranks.

Shard i always holds contexts [i*S, (i+1)*S) of the packed stream, and rank r writes the shards with
i % world_size == r. The shards are therefore identical whatever the number of processes, and a
resumed run only writes the shards that are not complete yet.
"""

from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_lab import ownership
from sae_lab.activations import cache_format as fmt
from sae_lab.activations.config import CacheConfig
from sae_lab.activations.generate import ActivationGenerator, HookStats, estimate_hook_stats
from sae_lab.activations.hooks import hook_slug
from sae_lab.activations.masks import keep_mask
from sae_lab.data.packing import count_contexts, iter_contexts
from sae_lab.data.sources import describe_source
from sae_lab.distributed import all_ok, barrier, broadcast_object, local_device, world
from sae_lab.fileio import json_sha256
from sae_lab.models import LoadedModel, load_model

log = logging.getLogger(__name__)


def build_cache(cfg: CacheConfig, model: LoadedModel | None = None, progress: bool = True) -> dict:
    """Create or resume the cache described by ``cfg``; returns the final manifest."""
    rank, world_size = world()
    root = Path(cfg.output)
    if model is None:
        model = load_model(cfg.model.name, local_device(cfg.model.device), cfg.model.dtype)
    cfg = cfg.model_copy(update={"activations": cfg.activations.expanded(model.hook_names)})  # globs -> names
    gen = ActivationGenerator(model, cfg.activations.hooks, cfg.data.exclude_special)
    header, error = None, None
    if rank == 0:
        try:
            header = prepare_header(root, cfg, model, gen)
        except Exception as e:  # tell the other ranks before raising
            error = e
    header = broadcast_object(header if error is None else None)
    if error is not None:
        raise error
    if header is None:
        raise fmt.CacheError("rank 0 could not prepare the cache header; see its error above")
    stats = {h: HookStats(**header["hooks"][h]["stats"]) for h in cfg.activations.hooks}
    ok = True
    try:
        _write_own_shards(root, cfg, gen, stats, rank, world_size, progress and rank == 0, header["identity_sha256"])
    except BaseException:
        ok = False
        raise
    finally:
        if world_size > 1 and not all_ok(ok):
            raise fmt.CacheError("another rank failed while caching; rerun the same command to resume")
    barrier()
    manifest = fmt.build_manifest(root, header, final=True) if rank == 0 else None
    barrier()
    return manifest if manifest is not None else fmt.read_manifest(root)


def model_identity_name(name: str) -> str:
    """The model as a cache records it: a local directory by its absolute path, else the name as given."""
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def cache_identity(cfg: CacheConfig, weights_hash: str | None) -> dict:
    """Everything that determines a cache's activations; a resume (and a run that trains on it) must match it.

    Model (name, weights SHA-256, dtype), hooks, data (source spec, files and their SHA-256s, packing), storage
    dtype, shard size, normalisation and the outlier rule. ``weights_hash=None`` leaves the model's hash out (for
    comparing a run config, which has no model loaded, against a manifest).
    """
    identity = {
        "model_name": model_identity_name(cfg.model.name),
        "model_dtype": cfg.model.dtype,
        "model_weights_sha256": weights_hash,
        "hooks": cfg.activations.hooks,
        "data": describe_source(cfg.data, hashes=True),
        "storage_dtype": cfg.storage_dtype,
        "shard_contexts": cfg.shard_contexts,
        "normalize": cfg.activations.normalize,
        "norm_sample_contexts": cfg.activations.norm_sample_contexts,
        "exclude_outliers": cfg.activations.exclude_outliers,
    }
    if weights_hash is None:
        del identity["model_weights_sha256"]
    return identity


def identity_differences(expected: dict, recorded: dict, skip: tuple[str, ...] = ()) -> list[str]:
    """'field: recorded -> expected' for every (nested) identity field that differs."""
    a, b = _flatten(recorded), _flatten(expected)
    keys = sorted(k for k in set(a) | set(b) if k.split(".")[0] not in skip and a.get(k) != b.get(k))
    return [f"{k}: cache has {a.get(k, '<absent>')!r}, config says {b.get(k, '<absent>')!r}" for k in keys]


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        return {k2: v2 for k, v in obj.items() for k2, v2 in _flatten(v, f"{prefix}{k}.").items()}
    return {prefix.rstrip("."): obj}


def identity_digest(identity: dict) -> str:
    return json_sha256(identity)


def prepare_header(root: Path, cfg: CacheConfig, model: LoadedModel, gen: ActivationGenerator) -> dict:
    """Reuse the header of a matching cache, refuse a mismatching one, or estimate stats for a new one.

    A directory sae-lab marked as a cache whose manifest is missing or damaged (killed before the first
    manifest, a truncated manifest) is rebuilt in place: its shards are kept only where their own shard.json
    records this identity. A directory sae-lab did not mark is used only if empty.
    """
    identity = cache_identity(cfg, model.weights_hash)
    digest = identity_digest(identity)
    old = _readable_manifest(root)
    if old is not None:
        if old.get("identity_sha256") != digest:
            diff = identity_differences(identity, old.get("identity", {}))
            fields = ", ".join(d.split(":")[0] for d in diff) or "format version"
            raise fmt.CacheError(
                f"'{root}' holds a cache made with a different config (differs in: {fields}):\n  "
                + "\n  ".join(diff)
                + f"\nUse another output directory, or delete '{root}' to rebuild it."
            )
        ownership.mark(root, CACHE_KIND)
        return {k: v for k, v in old.items() if k not in ("status", "totals", "shards")}
    foreign = ownership.foreign_entries(root, CACHE_OWNED)
    if ownership.owner_kind(root) != CACHE_KIND and (foreign or (root / fmt.SHARDS).exists()):
        raise fmt.CacheError(
            f"'{root}' is not empty and is not an activation cache sae-lab made (it holds "
            f"{ownership.describe_foreign(foreign or [fmt.SHARDS])}); choose an empty or new "
            "output directory"
        )
    if foreign:
        raise fmt.CacheError(
            f"cache directory '{root}' holds files sae-lab did not write: "
            f"{ownership.describe_foreign(foreign)}; move them away and run the same command again"
        )
    _check_writable(root)
    ownership.mark(root, CACHE_KIND)
    header = {
        "format": fmt.FORMAT,
        "version": fmt.VERSION,
        "identity_sha256": digest,
        "identity": identity,
        "model": model.describe(),
        "context_length": cfg.data.context_length,
        "storage_dtype": cfg.storage_dtype,
        "shard_contexts": cfg.shard_contexts,
        "data": identity["data"],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hooks": {},
    }
    for hook, (stats, d) in estimate_hook_stats(gen, cfg.data, cfg.activations).items():
        header["hooks"][hook] = {"slug": hook_slug(hook), "d": d, "stats": stats.to_json()}
    fmt.build_manifest(root, header, final=False)
    return header


CACHE_KIND = "cache"
CACHE_OWNED = (fmt.MANIFEST, fmt.SHARDS)


def _readable_manifest(root: Path) -> dict | None:
    """The manifest, or None when there is none or (in a directory sae-lab marked) it is damaged."""
    if not (root / fmt.MANIFEST).is_file():
        return None
    try:
        return fmt.read_manifest(root)
    except fmt.CacheError:
        if ownership.owner_kind(root) != CACHE_KIND:
            raise
        log.warning("%s is damaged; rebuilding it from the shards that match this config", root / fmt.MANIFEST)
        return None


def _check_writable(root: Path) -> None:
    try:
        (root / fmt.SHARDS).mkdir(parents=True, exist_ok=True)
        probe = root / ".write-probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise fmt.CacheError(
            f"cannot write to cache directory '{root}': {e.strerror}. Choose a writable output (output=...)"
        ) from None


def _chunks(contexts: Iterator[np.ndarray], size: int) -> Iterator[list[np.ndarray]]:
    while chunk := list(itertools.islice(contexts, size)):
        yield chunk


def _write_own_shards(
    root: Path,
    cfg: CacheConfig,
    gen: ActivationGenerator,
    stats: dict[str, HookStats],
    rank: int,
    world_size: int,
    show: bool,
    digest: str,
) -> None:
    fmt.remove_stale_tmp(root) if rank == 0 else None
    done = set(fmt.sound_shards(root, digest, rank, world_size))
    total = count_contexts(cfg.data, gen.model.tokenizer)
    bar = tqdm(
        total=None if total is None else total * cfg.data.context_length // world_size,
        unit="tok",
        unit_scale=True,
        desc=f"caching {','.join(gen.hooks)}",
        disable=not show,
        dynamic_ncols=True,
    )
    # One shard is written (np.save, SHA-256, fsync: all release the GIL) while the next one's forward runs.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
        pending = None
        for index, chunk in enumerate(_chunks(iter_contexts(cfg.data, gen.model.tokenizer), cfg.shard_contexts)):
            if index % world_size != rank:
                continue
            if index not in done:
                arrays, info = _compute_shard(cfg, gen, stats, index, np.stack(chunk))
                if pending is not None:
                    pending.result()  # re-raises a write error (e.g. disk full) before going on
                pending = writer.submit(fmt.write_shard, root, index, arrays, {**info, "identity_sha256": digest})
            bar.update(len(chunk) * cfg.data.context_length)
        if pending is not None:
            pending.result()
    bar.close()


def _compute_shard(
    cfg: CacheConfig, gen: ActivationGenerator, stats: dict[str, HookStats], index: int, tokens: np.ndarray
) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and shard.json fields of one shard (forward passes, masks, storage dtype)."""
    special = gen.special_mask(tokens)
    arrays: dict[str, np.ndarray] = {"tokens": tokens}
    info = {
        "index": index,
        "first_context": index * cfg.shard_contexts,
        "n_contexts": int(len(tokens)),
        "n_special": int(special.sum()),
        "n_keep": {},
        "n_outliers": {},
    }
    parts: dict[str, list[torch.Tensor]] = {h: [] for h in gen.hooks}
    for start in range(0, len(tokens), cfg.activations.batch_size):
        for h, a in gen.forward(tokens[start : start + cfg.activations.batch_size]).items():
            parts[h].append(a)
    for h in gen.hooks:
        acts = torch.cat(parts[h])
        keep = keep_mask(acts, special, stats[h].outlier_threshold).numpy()
        slug = hook_slug(h)
        arrays[slug] = fmt.to_storage(acts, cfg.storage_dtype)
        arrays[f"{slug}.keep"] = keep
        info["n_keep"][h] = int(keep.sum())
        info["n_outliers"][h] = int((~special).sum() - keep.sum())
    return arrays, info
