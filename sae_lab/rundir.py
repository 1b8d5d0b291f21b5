"""The run directory: the one module that knows its layout. Everything else reads and writes runs through it.

Layout (one directory per sweep)::

    config.yaml                  resolved config: train, saes, source (+ model, data, eval, ... sections)
    run.json                     status (running/stopped/failed/done), config hash, tokens seen, final results
    metrics.jsonl                one JSON line per logged step per SAE (``{"sae": name, "tokens": ..., ...}``)
    checkpoints/                 ckpt_<tokens>.pt, the newest ``keep_checkpoints`` only
    tensorboard/, wandb/         optional metric sinks (train.tensorboard, train.wandb)
    eval.json                    run-level eval summary (``sae-lab eval``)
    .analyze_checkpoint.safetensors  an analysis in progress (``sae-lab analyze``)
    saes/<name>/                 each final SAE: an SAE directory (sae_lab.saedir: SAELens layout, scale folded so
                                 that it applies to raw activations, + its eval.json and features.sqlite)

A run directory carries sae-lab's ownership marker (:mod:`sae_lab.ownership`): only the entries above (and
their temporaries) are ever deleted, by :meth:`RunDir.clear`, and never while other files are present.

This module sits on the ground floor: it imports only the standard library, PyYAML, ``sae_lab.fileio``,
``sae_lab.ownership`` and the SAE directory's layout (``sae_lab.saedir``). Which SAEs a run or any other target
names: ``sae_lab.saeref.resolve_saes``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sae_lab import ownership
from sae_lab.fileio import atomic_write_text
from sae_lab.saedir import ANALYZE_CHECKPOINT

CONFIG, STATUS, METRICS, EVAL = "config.yaml", "run.json", "metrics.jsonl", "eval.json"
CHECKPOINTS, SAES, TENSORBOARD = "checkpoints", "saes", "tensorboard"
RUN_KIND = "run"
OWNED = (CONFIG, STATUS, METRICS, EVAL, CHECKPOINTS, SAES, TENSORBOARD, "wandb", ANALYZE_CHECKPOINT)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message names the path and how to proceed."""


def read_jsonl(path: Path) -> list[dict]:
    """Every complete record of a JSON-lines file ([] if absent); a torn line (from a kill) is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"'{path}' is not valid JSON ({e}); delete it and rerun the step that writes it") from None


class RunDir:
    """Paths and read/write methods of one run directory (nothing is created until something is written)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir('{self.path}')"

    # ---- paths ----------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    @property
    def status_path(self) -> Path:
        return self.path / STATUS

    @property
    def metrics_path(self) -> Path:
        return self.path / METRICS

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def saes_dir(self) -> Path:
        return self.path / SAES

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def analyze_checkpoint_path(self) -> Path:
        return self.path / ANALYZE_CHECKPOINT

    def sae_dir(self, name: str) -> Path:
        """saes/<name>: an SAE directory (open it with ``sae_lab.saedir.SAEDir``)."""
        return self.saes_dir / name

    # ---- reading --------------------------------------------------------------------------------
    def is_run(self) -> bool:
        """True if the directory holds a run (its config.yaml)."""
        return self.config_path.is_file()

    def read_config(self) -> dict:
        """The resolved config (config.yaml); RunDirError naming the path if it is missing or corrupt."""
        if not self.config_path.is_file():
            raise RunDirError(f"'{self.path}' is not a run directory: it has no {CONFIG}")
        try:
            data = yaml.safe_load(self.config_path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RunDirError(f"'{self.config_path}' is not valid YAML ({e}); restore it or start a new run") from None
        if data is not None and not isinstance(data, dict):
            raise RunDirError(f"'{self.config_path}' holds a {type(data).__name__}, not a mapping of sections")
        return data or {}

    def read_status(self) -> dict:
        """run.json ({} if absent)."""
        return _read_json(self.status_path) or {}

    def sae_names(self) -> list[str]:
        """Names of the trained SAEs under saes/ (sorted; half-written temp directories are skipped)."""
        if not self.saes_dir.is_dir():
            return []
        return sorted(p.name for p in self.saes_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def metrics(self, sae: str | None = None) -> list[dict]:
        """metrics.jsonl records (of one SAE if ``sae`` is given), in the order logged; tolerates a torn last line."""
        records = read_jsonl(self.metrics_path)
        return records if sae is None else [r for r in records if r.get("sae") == sae]

    def eval_summary(self) -> dict | None:
        """The run-level eval.json (None before ``sae-lab eval``)."""
        return _read_json(self.eval_path)

    # ---- writing (atomic) -----------------------------------------------------------------------
    def write_config(self, resolved: dict) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(resolved, sort_keys=False))

    def write_status(self, **fields: Any) -> None:
        """Merge ``fields`` into run.json (atomically)."""
        atomic_write_text(self.status_path, json.dumps({**self.read_status(), **fields}, indent=2))

    def write_eval_summary(self, summary: dict) -> None:
        atomic_write_text(self.eval_path, json.dumps(summary, indent=2))

    # ---- ownership ------------------------------------------------------------------------------
    def claim(self) -> None:
        """Create the directory if needed and mark it as a sae-lab run (before anything else is written)."""
        ownership.mark(self.path, RUN_KIND)

    def is_owned(self) -> bool:
        return ownership.owner_kind(self.path) == RUN_KIND

    def foreign_entries(self) -> list[str]:
        """Files here that sae-lab did not write (directories with their own sae-lab marker, e.g. a cache, are
        sae-lab's)."""
        return ownership.foreign_entries(self.path, OWNED)

    def clear(self, config_path: str | Path | None = None) -> None:
        """Delete this run's files to start over; OwnershipError (naming them) unless sae-lab can prove it wrote
        everything here. Refuses '.', '..', home and any parent of ``config_path`` outright."""
        ownership.clear_owned(self.path, RUN_KIND, OWNED, config_path)
