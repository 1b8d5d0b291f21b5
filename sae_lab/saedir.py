"""The SAE directory: the one module that knows its layout (beside :mod:`sae_lab.rundir`, which owns the run).

Layout (one directory per SAE; ``saes/<name>/`` of a run, or standalone)::

    cfg.json                         SAELens config (architecture, d_in, d_sae, hook_name, ...; saes/README.md)
    sae_weights.safetensors          SAELens weights: W_enc, b_enc, W_dec, b_dec (+ threshold where SAELens has one)
    sae_lab_state.safetensors        sae-lab's other buffers (dead counters, density EMAs, ...)
    sae_lab.json                     sae-lab's full config, architecture, fold scale, SHA-256 of both weight files
    eval.json                        its eval record (``sae-lab eval``)
    features.sqlite (+ .sha256)      its feature database (``sae-lab analyze``)
    .analyze_checkpoint.safetensors  an analysis in progress (standalone SAE directories; a run keeps its own)

A directory is an SAE directory when it holds ``sae_weights.safetensors`` (:meth:`SAEDir.is_sae_dir`, the one
test): a SAELens directory (cfg.json + weights, no sae_lab.json) is one too and loads as SAELens defines it.
Only JSON and safetensors are ever read (never pickle). The SAELens mapping itself (which fields, which
architectures) is :mod:`sae_lab.saes.saelens_format`; SAE directories saved by sae-lab carry the ownership
marker (:mod:`sae_lab.ownership`) when the trainer writes them.

Reading the layout is light (standard library, ``fileio``, ``ownership``, ``configbase``): the CLI and the
dashboard's workspace inspect directories before torch is needed. :meth:`SAEDir.save` and :meth:`SAEDir.load`
import the SAE layer (torch, safetensors, the architectures) when called; the SAE layer never imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sae_lab import ownership
from sae_lab.configbase import ConfigError
from sae_lab.fileio import atomic_path, atomic_write_text, checksum_path, path_problem, sha256_file

if TYPE_CHECKING:
    import torch

    from sae_lab.saes.base import BaseSAE

CFG, WEIGHTS, STATE, INFO = "cfg.json", "sae_weights.safetensors", "sae_lab_state.safetensors", "sae_lab.json"
EVAL, FEATURE_DB, ANALYZE_CHECKPOINT = "eval.json", "features.sqlite", ".analyze_checkpoint.safetensors"
OWNED = (CFG, WEIGHTS, STATE, INFO, EVAL, FEATURE_DB, checksum_path(FEATURE_DB).name, ANALYZE_CHECKPOINT)
SAE_KIND = "sae"  # the ownership marker's kind
FORMAT = "sae-lab/1"  # sae_lab.json's format


class SAEFileError(ConfigError):
    """An SAE file that cannot be used (unreadable, truncated, malformed, non-finite); the message names it."""


class SAEDir:
    """Paths, the SAE-directory test, save/load and the eval record of one SAE directory (nothing is created until
    something is written)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SAEDir('{self.path}')"

    # ---- paths ----------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def cfg_path(self) -> Path:
        return self.path / CFG

    @property
    def weights_path(self) -> Path:
        return self.path / WEIGHTS

    @property
    def state_path(self) -> Path:
        return self.path / STATE

    @property
    def info_path(self) -> Path:
        return self.path / INFO

    @property
    def eval_path(self) -> Path:
        return self.path / EVAL

    @property
    def feature_db_path(self) -> Path:
        return self.path / FEATURE_DB

    @property
    def analyze_checkpoint_path(self) -> Path:
        return self.path / ANALYZE_CHECKPOINT

    # ---- what is here ---------------------------------------------------------------------------
    def is_sae_dir(self) -> bool:
        """True if this is an SAE directory (ours or SAELens's): it holds sae_weights.safetensors."""
        return self.weights_path.is_file()

    def is_intact(self) -> bool:
        """True if the SAE saved here loads: readable, the shapes fit and the files match their checksums."""
        try:
            self.load()
        except ConfigError:  # SAEFileError included
            return False
        return True

    def problem(self) -> str | None:
        """Why this is not an SAE directory (missing, a link loop, a file, no weights), or None if it is one."""
        if self.is_sae_dir():
            return None
        d = self.path
        problem = path_problem(d)
        if problem is not None:
            return f"'{d}' {problem}; give the directory of a saved SAE (it holds {WEIGHTS})"
        if not d.is_dir():
            hint = f"give its directory '{d.parent}'" if d.name in (WEIGHTS, CFG, INFO) else "give an SAE directory"
            return f"'{d}' is a file, not an SAE directory: {hint}"
        return f"'{d}' holds no {WEIGHTS}: not an SAE directory"

    def read_eval(self) -> dict | None:
        """eval.json (None before ``sae-lab eval``); SAEFileError naming it if it is not a JSON object."""
        return read_json(self.eval_path) if self.eval_path.is_file() else None

    def write_eval(self, record: dict) -> None:
        atomic_write_text(self.eval_path, json.dumps(record, indent=2))

    # ---- save / load ----------------------------------------------------------------------------
    def save(self, sae: BaseSAE, fold_scale: float | None = None, metadata: dict | None = None) -> Path:
        """Write ``sae`` here (cfg.json, both weight files, sae_lab.json; other files are kept). With
        ``fold_scale`` s the saved SAE applies to raw x (training saw s·x); ``metadata`` (model_name,
        context_size, ...) goes into cfg.json."""
        from safetensors.torch import save_file

        from sae_lab.saes.saelens_format import SAELENS_KEYS, saelens_cfg

        d = self.path
        d.mkdir(parents=True, exist_ok=True)
        if fold_scale is not None:
            state, cfg = sae.folded_tensors(float(fold_scale))
        else:
            state, cfg = {k: v.detach().clone() for k, v in sae.state_dict().items()}, sae.cfg
        arch, sl_arch = sae.architecture, type(sae).saelens_architecture(cfg)
        weights = {k: state.pop(k) for k in SAELENS_KEYS if k in state}
        if sl_arch == "jumprelu":
            weights["threshold"] = weights["threshold"].expand(cfg.d_sae)
        weights = {k: v.float().contiguous().cpu() for k, v in weights.items()}
        save_file(weights, str(self.weights_path))
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(self.state_path))
        saelens = {**saelens_cfg(cfg, sl_arch or f"sae_lab_{arch}", metadata or {}), **type(sae).saelens_fields(cfg)}
        self.cfg_path.write_text(json.dumps(saelens, indent=2))
        ours = {
            "format": FORMAT,
            "architecture": arch,
            "config": cfg.model_dump(mode="json"),
            "fold_scale": fold_scale,
            "saelens_architecture": sl_arch,
            "metadata": metadata or {},
            "sha256": {f: sha256_file(d / f) for f in (WEIGHTS, STATE)},
        }
        if sl_arch is None:
            ours["note"] = type(sae).saelens_unmapped_note(cfg)
        self.info_path.write_text(json.dumps(ours, indent=2))
        return d

    def replace(self, sae: BaseSAE, fold_scale: float | None = None, metadata: dict | None = None) -> Path:
        """Write ``sae`` as a fresh, marked directory in one step (a temporary directory swapped in), so this
        directory is never half written. An existing one is replaced only when sae-lab owns everything in it
        (OwnershipError, naming the other files, otherwise)."""
        if self.path.exists():
            ownership.clear_owned(self.path, SAE_KIND, OWNED)
        with atomic_path(self.path, directory=True) as tmp:
            ownership.mark(tmp, SAE_KIND)
            SAEDir(tmp).save(sae, fold_scale=fold_scale, metadata=metadata)
        return self.path

    def load(self, device: str | torch.device | None = None) -> BaseSAE:
        """The SAE saved here by sae-lab, or a SAELens standard/topk/jumprelu/matching_pursuit SAE."""
        if not self.is_sae_dir():
            raise ConfigError(self.problem())
        try:
            sae = self._load_ours() if self.info_path.is_file() else self._load_saelens()
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            if isinstance(e, ConfigError):
                raise
            raise SAEFileError(
                f"'{self.path}' is not a usable SAE directory: cfg.json or the weights lack or "
                f"mis-shape {type(e).__name__}: {e}"
            ) from None
        return sae.to(device) if device is not None else sae

    def _load_ours(self) -> BaseSAE:
        from sae_lab.saes import registry

        info = read_json(self.info_path)
        try:
            cls = registry.get_sae_class(info["architecture"])
            # files written before per-architecture configs hold every architecture's options: keep this one's
            fields = cls.config_class.model_fields
            sae = cls(cls.config_class.model_validate({k: v for k, v in info["config"].items() if k in fields}))
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise SAEFileError(f"'{self.info_path}' does not describe an SAE ({type(e).__name__}: {e})") from None
        state = read_tensors(self.weights_path)  # unreadable or non-finite: named precisely
        if self.state_path.is_file():
            state.update(read_tensors(self.state_path))
        for fname, digest in (info.get("sha256") or {}).items():  # then any silent change (a flipped bit)
            if (self.path / fname).is_file() and sha256_file(self.path / fname) != digest:
                raise SAEFileError(
                    f"'{self.path / fname}' does not match the SHA-256 recorded in {INFO}: the file "
                    "is damaged; restore it or save the SAE again"
                )
        own = sae.state_dict()
        if "threshold" in state and own["threshold"].dim() == 0:
            state["threshold"] = state["threshold"].reshape(-1)[0]
        try:
            sae.load_state_dict(state)
        except RuntimeError as e:
            raise SAEFileError(f"the weights in '{self.path}' do not fit its config: {e}") from None
        return sae

    def _load_saelens(self) -> BaseSAE:
        from sae_lab.saes.saelens_format import from_saelens, saelens_class

        c = read_json(self.cfg_path)
        cls = saelens_class(c)  # an architecture sae-lab cannot load is named before the weights are read
        weights = {k: v.float() for k, v in read_tensors(self.weights_path).items()}
        return from_saelens(cls, c, weights, self.path.name or "saelens")


def read_json(path: Path) -> dict:
    """A JSON object from ``path``, or SAEFileError naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SAEFileError(f"'{path}' cannot be read as JSON ({e}); restore it or save the SAE again") from None
    if not isinstance(data, dict):
        raise SAEFileError(f"'{path}' must hold a JSON object, not {type(data).__name__}")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, refusing truncated/damaged files and NaN/inf values, naming both."""
    import torch
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for truncated or malformed headers
        raise SAEFileError(
            f"'{path}' is not a readable safetensors file ({type(e).__name__}: {e}); "
            "it is truncated or damaged: restore it or save the SAE again"
        ) from None
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise SAEFileError(
                f"'{path}': tensor '{name}' holds {n_bad} NaN/inf value(s); these weights are "
                "unusable (a diverged or damaged SAE): retrain it or restore the file"
            )
    return tensors
