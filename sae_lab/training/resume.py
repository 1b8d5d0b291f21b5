"""Training's side of a run directory: the resolved config it records and the resume/refuse decision.

The layout itself (file names, reading and writing) belongs to :mod:`sae_lab.rundir`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml

from sae_lab.activations.source import ActivationSource
from sae_lab.configbase import dump_yaml
from sae_lab.ownership import OwnershipError, describe_foreign
from sae_lab.rundir import RunDir, RunDirError
from sae_lab.saes.base import BaseSAE
from sae_lab.training.config import NON_TRAINING_FIELDS, TrainConfig, config_hash

ResumeMode = Literal["auto", "never", "must"]


def resolved_config(
    cfg: TrainConfig, saes: Sequence[BaseSAE], source: ActivationSource, extra: dict | None = None
) -> dict:
    """The config written to config.yaml: train, saes and the source's description (+ caller's sections). Under
    ``lr: auto`` it also records each SAE's resolved base lr (``base_lr``), and under ``encoder_eps_ratio: auto`` its
    ratio, so the config hash covers the values and a change of an auto rule cannot resume an old run differently."""
    resolved = {
        "train": yaml.safe_load(dump_yaml(cfg)),
        "saes": [yaml.safe_load(dump_yaml(s.cfg)) for s in saes],
        "source": _jsonable(source.describe()),
    }
    if cfg.lr == "auto":
        resolved["base_lr"] = {s.cfg.name: cfg.lr_for(s.cfg.d_sae, s.cfg.architecture) for s in saes}
    if cfg.encoder_eps_ratio == "auto":
        resolved["encoder_eps_ratio"] = {s.cfg.name: cfg.encoder_eps_ratio_for(s.cfg.architecture) for s in saes}
    for key, value in (extra or {}).items():
        resolved.setdefault(key, _jsonable(value))
    return resolved


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def training_payload(resolved: dict) -> dict:
    """The part of a resolved config that determines the trained weights (what the config hash covers)."""
    train = {k: v for k, v in (resolved.get("train") or {}).items() if k not in NON_TRAINING_FIELDS}
    payload = {"train": train, "saes": resolved.get("saes"), "source": resolved.get("source")}
    for key in ("base_lr", "encoder_eps_ratio"):  # present only under 'auto', so explicit values' hashes are unchanged
        if key in resolved:
            payload[key] = resolved[key]
    return payload


def resolved_hash(resolved: dict) -> str:
    return config_hash(training_payload(resolved))


def check_writable(path: Path) -> None:
    """Create ``path`` if needed and prove it is writable with a probe file (RunDirError if not)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"run directory '{path}' is not writable: {e}. Choose another run_dir.") from None


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}.{i}"))
        return out or {prefix: []}
    return {prefix: obj}


def describe_differences(old: dict, new: dict, limit: int = 8) -> str:
    """'key: old -> new' lines for the training-relevant keys that differ."""
    a, b = _flatten(training_payload(old)), _flatten(training_payload(new))
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>"))
    lines = [f"    {k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in keys[:limit]]
    if len(keys) > limit:
        lines.append(f"    ... and {len(keys) - limit} more")
    return "\n".join(lines)


def prepare(
    run: RunDir, resolved: dict, resume: ResumeMode, overwrite: bool = False, config_path: str | Path | None = None
) -> Literal["fresh", "resume"]:
    """Decide whether to start fresh or resume in ``run``; never clobbers a run silently, never deletes a file
    sae-lab did not write.

    - empty or missing directory, or one holding only sae-lab's own directories (e.g. the run's cache): fresh
      (``resume='must'`` refuses: nothing to resume);
    - an existing run with the same training config: resume (``'auto'``/``'must'``);
    - ``resume='never'``: refuses an existing run unless ``overwrite=True``, which deletes the run's own files
      (RunDir.clear: refused for unmarked runs, while foreign files are present, and for '.', '..', home and
      any parent of ``config_path``);
    - an existing run with a different training config: refuses, naming the differing keys;
    - a directory holding other files and no run: refuses, naming those files, even with overwrite.
    """
    if resume not in ("auto", "never", "must"):
        raise ValueError(f"resume must be 'auto', 'never' or 'must', got {resume!r}")
    path = run.path
    if not run.is_run():
        foreign = run.foreign_entries()
        if foreign:
            raise RunDirError(
                f"'{path}' is not a sae-lab run directory and holds other files "
                f"({describe_foreign(foreign)}); choose a new or empty run_dir"
            )
        if resume == "must":
            raise RunDirError(f"resume='must' but '{path}' holds no run to resume")
        return "fresh"
    how = (
        f"Choose a new run_dir, or pass resume='never' with overwrite=True "
        f"(CLI: --resume never --overwrite) to delete the run's own files in '{path}' and start over."
    )
    if resume == "never":
        if not overwrite:
            raise RunDirError(f"'{path}' already holds a run and resume='never'. {how}")
        try:
            run.clear(config_path)
        except OwnershipError as e:
            raise RunDirError(str(e)) from None
        return "fresh"
    old = run.read_config()
    if resolved_hash(old) != resolved_hash(resolved):
        raise RunDirError(
            f"'{path}' holds a run with a different training config, so it cannot be resumed:\n"
            f"{describe_differences(old, resolved)}\n"
            f"To continue it, rerun with its own config ({run.config_path}). {how}"
        )
    return "resume"
